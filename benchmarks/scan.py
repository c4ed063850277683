"""Alpha scan in memory vs the naive loop users write today, in one run, same evaluation.

The naive loop is what wise-ft's code does per alpha: merge the two state dicts, save the
model to disk, load it back, evaluate. `sgmerge scan` keeps both endpoints and moves one live
model with LinearPath. Each side's overhead per alpha is its time per alpha minus the
evaluation's own time. Goals (issue 5): the scan's overhead is at most 1/10 of the naive loop's,
and under 10% of the evaluation itself.

    .venv/bin/python benchmarks/scan.py [--alphas 0:1:0.1] [--pair DIR_PRE,DIR_FT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mergekit_sg.commands import minilm_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import perturbed_copy

from mergekit_sg.evals import build_evaluator
from mergekit_sg.io import copy_side_files
from mergekit_sg.models import load_model
from mergekit_sg.path import parse_alphas, scan

EVALS = [
    "generality.lee=embedding-similarity:lee",
    "generality.wordsim=embedding-similarity:wordsim353",
]


class Timed:
    """Wraps an evaluator and accumulates the time spent inside it."""

    def __init__(self, ev: object) -> None:
        self.ev = ev
        self.seconds = 0.0
        for k in ("name", "role", "primary", "lower_is_better"):
            setattr(self, k, getattr(ev, k))

    def __call__(self, model: object) -> dict[str, float]:
        t = time.perf_counter()
        out = self.ev(model)  # type: ignore[operator]
        self.seconds += time.perf_counter() - t
        return out


def naive_loop(
    pre: Path, ft: Path, alphas: list[float], spec: str, work: Path
) -> tuple[float, float, list]:
    """wise-ft style: merge state dicts in memory, save, load from disk, evaluate."""
    evs = [Timed(build_evaluator(s)) for s in EVALS]
    t0 = time.perf_counter()
    theta0, theta1 = load_file(pre / "model.safetensors"), load_file(ft / "model.safetensors")
    results = []
    for a in alphas:
        theta = {
            k: ((1 - a) * theta0[k].float() + a * theta1[k].float()).to(theta1[k].dtype)
            if theta1[k].is_floating_point()
            else theta1[k]
            for k in theta1
        }
        out = work / f"naive-{a:g}"
        out.mkdir(parents=True, exist_ok=True)
        save_file(theta, out / "model.safetensors", metadata={"format": "pt"})
        copy_side_files(ft, out)
        model = load_model(spec, out)
        results.append({e.name: e(model) for e in evs})
        shutil.rmtree(out)
    total = time.perf_counter() - t0
    return total, sum(e.seconds for e in evs), results


def our_scan(pre: Path, ft: Path, alphas: list[float], spec: str) -> tuple[float, float, list]:
    evs = [Timed(build_evaluator(s)) for s in EVALS]
    t0 = time.perf_counter()
    rep = scan(pre, ft, None, model=spec, alphas=",".join(f"{a:g}" for a in alphas), evaluators=evs)
    total = time.perf_counter() - t0
    return total, sum(e.seconds for e in evs), [p.metrics for p in rep.result.points]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alphas", default="0:1:0.1")
    ap.add_argument(
        "--pair", default=None, help="PRE,FT directories (default: MiniLM + perturbed copy)"
    )
    ap.add_argument("--model", default="hf:encoder")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    args = ap.parse_args()
    torch.manual_seed(0)
    alphas = parse_alphas(args.alphas)
    work = Path(tempfile.mkdtemp(prefix="sg-bench-scan-"))
    try:
        if args.pair:
            pre, ft = (Path(p) for p in args.pair.split(","))
        else:
            pre = minilm_dir()
            ft = perturbed_copy(pre, work / "ft", scale=0.05, seed=0)
        # warm both code paths once (imports, page cache, evaluator data)
        our_scan(pre, ft, [0.5], args.model)
        naive, ours = [], []
        for r in range(args.repeats):  # alternate, so load on a shared machine hits both
            sides = [("naive", naive), ("scan", ours)]
            for name, runs in sides if r % 2 == 0 else sides[::-1]:
                if name == "naive":
                    runs.append(naive_loop(pre, ft, alphas, args.model, work))
                else:
                    runs.append(our_scan(pre, ft, alphas, args.model))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    k = len(alphas)
    n_res, s_res = naive[0][2], ours[0][2]
    for a, x, y in zip(alphas, n_res, s_res, strict=True):
        for name in x:
            for m in x[name]:
                assert abs(x[name][m] - y[name][m]) < 1e-4, (a, name, m, x[name][m], y[name][m])
    med = statistics.median
    n_total, n_eval = med(t for t, _, _ in naive), med(e for _, e, _ in naive)
    s_total, s_eval = med(t for t, _, _ in ours), med(e for _, e, _ in ours)
    n_over = med((t - e) / k for t, e, _ in naive)
    s_over = med((t - e) / k for t, e, _ in ours)
    eval_per = s_eval / k
    print(f"per run (total s / eval s): naive {[(round(t, 2), round(e, 2)) for t, e, _ in naive]}")
    print(f"per run (total s / eval s): scan  {[(round(t, 2), round(e, 2)) for t, e, _ in ours]}")
    print(
        f"machine: {torch.get_num_threads()} torch threads; alphas: {k}; model: {args.model}; "
        f"medians of {args.repeats} runs each"
    )
    print(f"{'':12}{'total s':>10}{'eval s':>10}{'overhead/alpha s':>18}")
    print(f"{'naive loop':12}{n_total:10.2f}{n_eval:10.2f}{n_over:18.3f}")
    print(f"{'sgmerge scan':12}{s_total:10.2f}{s_eval:10.2f}{s_over:18.3f}")
    r1, r2 = s_over / n_over, s_over / eval_per
    met1, met2 = ("met" if ok else "NOT met" for ok in (r1 <= 0.1, r2 < 0.1))
    print(
        f"SUMMARY scan overhead / naive overhead = {r1:.3f} (goal <= 0.1: {met1}); "
        f"scan overhead / evaluation = {r2:.3f} (goal < 0.1: {met2})"
    )


if __name__ == "__main__":
    main()
