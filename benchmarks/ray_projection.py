"""Project the base-to-novel protocol's wall time on 1, 8 and 64 GPUs from the overhead per
job measured by benchmarks/ray_scan.py, under the stated assumptions (the per-step GPU time is
an assumption, not a measurement: no GPU was available where this was written).

Jobs: 11 datasets x 3 seeds x 2 chains (CoOp -> MERGETUNE, KgCoOp -> MERGETUNE) = 66
independent jobs. A job trains E_TRAIN epochs of CoOp (or KgCoOp, same step cost), then
E_MT epochs of MERGETUNE (1.03x a CoOp step, benchmarks/RESULTS.md "MERGETUNE step cost"), on
16 shots of each base class (half the classes), batch 32, and scores 4 prompts on the test set
(the image features are computed once per job). Jobs are placed longest first on the first
free GPU (what Ray's queue does with equal resources once the big jobs are submitted first);
the wall time is the last GPU's finishing time; each job pays the measured per-job overhead
(scheduling, model load) and each worker the measured start-up (imports) once.

    python benchmarks/ray_projection.py --job-overhead S --cold S [--step 0.10] [--img-per-s 1500]
"""

from __future__ import annotations

import argparse
import heapq
import math

# CoOp splits: classes and test images
DATASETS = {
    "imagenet": (1000, 50000),
    "caltech101": (100, 2465),
    "oxford_pets": (37, 3669),
    "stanford_cars": (196, 8041),
    "flowers102": (102, 2463),
    "food101": (101, 30300),
    "fgvc_aircraft": (100, 3333),
    "sun397": (397, 19850),
    "dtd": (47, 1692),
    "eurosat": (10, 8100),
    "ucf101": (101, 3783),
}


def job_seconds(classes: int, test: int, a: argparse.Namespace) -> float:
    steps = math.ceil(16 * math.ceil(classes / 2) / 32)
    train = (a.epochs + a.mt_epochs * 1.03) * steps * a.step
    return train + test / a.img_per_s


def makespan(jobs: list[float], gpus: int, cold: float = 0.0) -> float:
    free = [cold] * gpus
    for t in sorted(jobs, reverse=True):
        earliest = heapq.heappop(free)
        heapq.heappush(free, earliest + t)
    return max(free)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-overhead", type=float, required=True, help="measured s per job")
    p.add_argument("--cold", type=float, default=0.0, help="measured s per worker, once")
    p.add_argument("--step", type=float, default=0.10, help="s per training step on one GPU")
    p.add_argument("--img-per-s", type=float, default=1500.0, help="test images encoded per s")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--mt-epochs", type=int, default=5)
    a = p.parse_args()
    jobs = [
        job_seconds(c, t, a) + a.job_overhead
        for c, t in DATASETS.values()
        for _seed in range(3)
        for _chain in range(2)
    ]
    work = sum(job_seconds(c, t, a) for c, t in DATASETS.values()) * 6
    print(
        f"{len(jobs)} jobs, {work / 3600:.2f} GPU-hours of compute; Ray adds "
        f"{a.job_overhead:.1f} s per job and {a.cold:.0f} s per worker once "
        f"({(sum(jobs) - work) / work:.2%} of the compute on one GPU)"
    )
    print("| GPUs | wall time | speed-up vs 1 GPU | bound by |")
    print("|---:|---:|---:|---|")
    one = makespan(jobs, 1, a.cold)
    for n in (1, 8, 64):
        w = makespan(jobs, n, a.cold)
        bound = (
            "the longest job (ImageNet)"
            if math.isclose(w, max(jobs) + a.cold)
            else "total work / GPUs"
        )
        print(f"| {n} | {w / 60:.1f} min | {one / w:.1f}x | {bound} |")


if __name__ == "__main__":
    main()
