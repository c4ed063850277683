"""The MiniLM demo scan on Ray with 2 workers (1 thread each) against the local in-process
scan (2 threads), in one run, same alphas, same evaluators.

The pair is the demo's: all-MiniLM-L6-v2 with the zero-shot "a bad movie" / "a good movie"
head, fine-tuned on Rotten Tomatoes (a quick fine-tune: this measures the scan, not the
fine-tune). Every evaluator call is timed inside the process that runs it, so each Ray job's
wall time (driver: submit -> result) splits into its compute (the evaluator calls) and Ray's
overhead (scheduling, worker start, imports, model and endpoint load, lerp, transfer), reported
as a fraction of the job's compute (goal < 5%). The Ray scan runs twice: cold (fresh workers:
imports and model load) and warm (the same workers again).

Ray runs only inside a network namespace whose only interface is loopback: the script
re-executes itself under `unshare -n` (root) and brings lo up; it refuses to start Ray otherwise.

    PYTHONPATH=. .venv/bin/python benchmarks/ray_scan.py [--alphas 0:1:0.1] [--limit 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests"))


@dataclass
class Timed:
    """An evaluator that logs `PID SECONDS` per call to `log` (workers share the machine)."""

    inner: Any
    log: str

    def __post_init__(self) -> None:
        self.name, self.role = self.inner.name, self.inner.role
        self.primary, self.lower_is_better = self.inner.primary, self.inner.lower_is_better

    def __call__(self, model: Any) -> dict[str, float]:
        t = time.perf_counter()
        out = self.inner(model)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {time.perf_counter() - t:.6f}\n")
        return out


def make_pair(work: Path) -> tuple[Path, Path]:
    from mergekit_sg.commands.demo import PROMPTS, minilm_dir
    from mergekit_sg.tune import finetune

    zs, ft = work / "zeroshot", work / "finetuned"
    if not (ft / "model.safetensors").exists():
        finetune(
            ft,
            model="hf:embedding-classifier",
            pretrained=str(minilm_dir()),
            data="rotten-tomatoes",
            train_size=256,
            zeroshot_head=PROMPTS,
            head_scale=20.0,
            lr=1e-4,
            epochs=1,
            batch_size=32,
            max_length=64,
            save_init=str(zs),
            seed=0,
            device="cpu",
            quiet=True,
            force=True,
        )
    return zs, ft


def evaluators(limit: int, log: Path) -> list[Timed]:
    from mergekit_sg.evals import build_evaluator

    specs = [
        f"speciality=seq-classification:rotten-tomatoes-test,limit={limit}",
        "generality.lee=embedding-similarity:lee",
        "generality.wordsim=embedding-similarity:wordsim353",
    ]
    return [Timed(build_evaluator(s), str(log)) for s in specs]


def calls(log: Path) -> dict[int, float]:
    """Compute seconds per process."""
    per: dict[int, float] = {}
    for line in log.read_text().split("\n"):
        if line:
            pid, sec = line.split()
            per[int(pid)] = per.get(int(pid), 0.0) + float(sec)
    return per


def ray_scan(pair: tuple[Path, Path], out: Path, args: argparse.Namespace, tag: str) -> dict:
    """One Ray scan; each job's driver-side wall time and its compute inside the worker."""

    from mergekit_sg.path.run import scan
    from mergekit_sg.ray_jobs import RayExecutor

    log = out.parent / f"{tag}.calls"
    log.unlink(missing_ok=True)
    ex = RayExecutor("local")
    walls: list[float] = []
    orig_run = ex.run

    def timed_run(jobs, on_result, board=None):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()

        def seen(job, value):  # type: ignore[no-untyped-def]
            walls.append(time.perf_counter() - t0)
            on_result(job, value)

        return orig_run(jobs, seen, board)

    ex.run = timed_run  # type: ignore[method-assign]
    t = time.perf_counter()
    rep = scan(
        *pair,
        out,
        model="hf:embedding-classifier",
        alphas=args.alphas,
        device="cpu",
        evaluators=evaluators(args.limit, log),
        executor=ex,
        resume=False,
    )
    wall = time.perf_counter() - t
    compute = sorted(calls(log).values())
    over = [w - c for w, c in zip(sorted(walls), compute, strict=True)]

    return {
        "wall": wall,
        "job_walls": sorted(walls),
        "job_compute": compute,
        "overhead": over,
        "overhead_frac": [o / c for o, c in zip(over, compute, strict=True)],
        "overhead_frac_total": sum(over) / sum(compute),
        "rows": rep.result.rows(),
        "alpha": rep.selection.alpha if rep.selection else None,
    }


def inner(args: argparse.Namespace) -> None:
    import raykit
    import torch

    if not raykit.only_loopback():
        sys.exit("refusing to start Ray outside a loopback-only network namespace")
    raykit.lo_up()
    import ray

    from mergekit_sg.path.run import scan

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pair = make_pair(work)
    load = os.getloadavg()
    # local: one process, 2 threads; cold (first-time data loading) then warm
    torch.set_num_threads(2)
    local_runs = []
    for tag in ("local_cold", "local_warm"):
        log = work / f"{tag}.calls"
        log.unlink(missing_ok=True)
        t = time.perf_counter()
        local = scan(
            *pair,
            work / tag,
            model="hf:embedding-classifier",
            alphas=args.alphas,
            device="cpu",
            evaluators=evaluators(args.limit, log),
            resume=False,
        )
        local_runs.append((time.perf_counter() - t, sum(calls(log).values())))
    (t_cold, c_cold), (t_local, c_local) = local_runs
    torch.set_num_threads(1)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent), str(HERE.parents[1] / "tests"), str(HERE.parents[1])]
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    assert "node:127.0.0.1" in ray.cluster_resources()
    cold = ray_scan(pair, work / "ray_cold", args, "cold")
    warm = ray_scan(pair, work / "ray_warm", args, "warm")
    ray.shutdown()
    rows = local.result.rows()
    diff = max(
        abs(a[k] - b[k])
        for a, b in zip(rows, warm["rows"], strict=True)
        for k in a
        if isinstance(a[k], float) and isinstance(b[k], float)
    )
    res = {
        "alphas": args.alphas,
        "limit": args.limit,
        "load_before": load,
        "load_after": os.getloadavg(),
        "local_cold_wall": t_cold,
        "local_cold_compute": c_cold,
        "local_wall": t_local,
        "local_compute": c_local,
        "ray_cold_wall": cold["wall"],
        "ray_warm_wall": warm["wall"],
        "speedup_cold": t_cold / cold["wall"],
        "speedup_warm": t_local / warm["wall"],
        "cold": {k: v for k, v in cold.items() if k != "rows"},
        "warm": {k: v for k, v in warm.items() if k != "rows"},
        "same_selection": local.selection.alpha == cold["alpha"] == warm["alpha"],
        "max_abs_diff_local_vs_ray": diff,
    }
    print(json.dumps(res, indent=1))
    (work / "result.json").write_text(json.dumps(res, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alphas", default="0:1:0.1")
    p.add_argument("--limit", type=int, default=256)
    p.add_argument("--work", default="/tmp/sgmerge-ray-scan")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        inner(args)
        return
    cmd = [
        sys.executable,
        str(HERE),
        "--inner",
        "--alphas",
        args.alphas,
        "--limit",
        str(args.limit),
        "--work",
        args.work,
    ]
    sys.exit(subprocess.run(["unshare", "-n", *cmd]).returncode)


if __name__ == "__main__":
    main()
