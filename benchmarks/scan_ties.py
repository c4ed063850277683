"""The lambda scan of a TIES merge vs a WiSE-FT alpha scan, per point, in one run.

`sgmerge scan --config ties.yml --param lambda=...` computes the merged task vector once and
then moves the live model along theta_base + lambda * delta with a LinearPath, exactly as a
WiSE-FT scan moves it along theta_pre + alpha * (theta_ft - theta_pre). Goal (issue 12): a
lambda point costs no more than an alpha point. Each side builds its path once (timed apart as
setup: the endpoints, for TIES the merged task vector), then `scan_path` walks the same k
points with the same evaluators on the same live model (timed: the per-point cost, moving the
model plus evaluating it). Sides alternate; medians of --repeats runs.

    .venv/bin/python benchmarks/scan_ties.py [--points 11] [--repeats 5] [--eval SPEC ...]

Default inputs: the real all-MiniLM-L6-v2 (22.7M params) as the base and pretrained, two
perturbed copies as the fine-tunes (WiSE-FT scans base -> the first); TIES density 0.5."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import perturbed_copy

from mergekit_sg.commands import minilm_dir
from mergekit_sg.evals import build_evaluator
from mergekit_sg.models import load_model
from mergekit_sg.models.linear_path import LinearPath, lambda_path
from mergekit_sg.path.walk import scan_path

DEFAULT_EVAL = "value=python:evalfns:weight_mean,key=embeddings.word_embeddings.weight"


def values(k: int) -> list[float]:
    return [i / (k - 1) for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hf:encoder")
    ap.add_argument("--eval", action="append", default=None)
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    evs = [build_evaluator(s) for s in (args.eval or [DEFAULT_EVAL])]
    work = Path(tempfile.mkdtemp(prefix="sg-bench-scan-ties-"))
    try:
        base = minilm_dir()
        ft1 = perturbed_copy(base, work / "ft1", scale=0.05, seed=1)
        ft2 = perturbed_copy(base, work / "ft2", scale=0.05, seed=2)
        cfg = {
            "merge_method": "ties",
            "base_model": str(base),
            "models": [
                {"model": str(ft1), "parameters": {"weight": 1.0, "density": 0.5}},
                {"model": str(ft2), "parameters": {"weight": 1.0, "density": 0.5}},
            ],
        }
        model = load_model(args.model, base)
        t = time.perf_counter()
        paths = {
            "wiseft": LinearPath(model.module, base, ft1, rename=model.rename),
            "setup_wiseft": time.perf_counter() - t,
        }
        t = time.perf_counter()
        paths["ties"] = lambda_path(model.module, cfg, rename=model.rename)
        paths["setup_ties"] = time.perf_counter() - t
        pts = values(args.points)
        for side in ("wiseft", "ties"):  # warm
            scan_path(paths[side], model, [0.5], evs)
        runs: dict[str, list[float]] = {"wiseft": [], "ties": []}
        for r in range(args.repeats):
            for side in ["wiseft", "ties"] if r % 2 == 0 else ["ties", "wiseft"]:
                paths[side].alpha = None
                t = time.perf_counter()
                scan_path(paths[side], model, pts, evs)
                runs[side].append((time.perf_counter() - t) / len(pts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    print(
        f"machine: {torch.get_num_threads()} torch threads; model {args.model}; {len(pts)} points"
    )
    print(f"evaluators: {[e.name for e in evs]}; medians of {args.repeats} alternated runs")
    print(f"{'':22}{'s/point':>10}{'setup s':>10}   runs s/point")
    for side, label in (("wiseft", "WiSE-FT alpha scan"), ("ties", "TIES lambda scan")):
        shown = [round(x, 4) for x in runs[side]]
        print(f"{label:22}{med(runs[side]):10.4f}{paths['setup_' + side]:10.2f}   {shown}")
    ratio = med(runs["ties"]) / med(runs["wiseft"])
    print(
        f"SUMMARY TIES lambda point / WiSE-FT alpha point = {ratio:.3f} "
        f"(goal <= 1: {'met' if ratio <= 1.05 else 'NOT met'}, 5% timing tolerance)"
    )


if __name__ == "__main__":
    main()
