"""Alpha scan in memory vs the naive loop users write today, in one run, same evaluation.

The naive loop is what wise-ft's code does per alpha: merge the two state dicts, save the
model to disk, load it back, evaluate. `sgmerge scan` keeps both endpoints and moves one live
model with LinearPath. Goals (issue 5): the scan's overhead is at most 1/10 of the naive loop's,
and under 10% of the evaluation itself.

Overhead is measured directly: every evaluator call of a side is wrapped in a timer that records
its start and end, in wall time and in this process's CPU time (all threads). A side's overhead
is the time outside those calls, and its per-alpha overhead the median gap between one alpha's
last evaluator call and the next alpha's first (the merge or move of the model; setup, the time
before the first call, is reported apart). CPU time is the headline: on a loaded machine wall
time outside the evaluators grows with the wait for a core, CPU time hardly does, so the ratio
holds under load (the wall figures are printed beside it).

    .venv/bin/python benchmarks/scan.py [--alphas 0:1:0.1] [--pair DIR_PRE,DIR_FT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
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


def _now() -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time counts every thread of this process."""
    return time.perf_counter(), time.process_time()


@dataclass
class Clock:
    """The evaluator calls of one run, in order: (start, end) each as (wall, cpu)."""

    start: tuple[float, float] = field(default_factory=_now)
    calls: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    end: tuple[float, float] | None = None

    def stop(self) -> None:
        self.end = _now()

    def inside(self, i: int) -> float:
        """Time inside evaluator calls (i = 0 wall, 1 cpu)."""
        return sum(b[i] - a[i] for a, b in self.calls)

    def total(self, i: int) -> float:
        assert self.end is not None
        return self.end[i] - self.start[i]

    def outside(self, i: int) -> float:
        """Time outside evaluator calls: setup, per-alpha model work, teardown."""
        return self.total(i) - self.inside(i)

    def setup(self, i: int) -> float:
        return self.calls[0][0][i] - self.start[i]

    def gaps(self, i: int, per_alpha: int) -> list[float]:
        """Between one alpha's last evaluator call and the next alpha's first."""
        ends = self.calls[per_alpha - 1 :: per_alpha]
        starts = self.calls[per_alpha::per_alpha]
        return [b[0][i] - a[1][i] for a, b in zip(ends, starts, strict=False)]


class Timed:
    """Wraps an evaluator and records each call's start and end on a shared Clock."""

    def __init__(self, ev: object, clock: Clock) -> None:
        self.ev = ev
        self.clock = clock
        for k in ("name", "role", "primary", "lower_is_better"):
            setattr(self, k, getattr(ev, k))

    def __call__(self, model: object) -> dict[str, float]:
        t = _now()
        out = self.ev(model)  # type: ignore[operator]
        self.clock.calls.append((t, _now()))
        return out


def naive_loop(
    pre: Path, ft: Path, alphas: list[float], spec: str, work: Path
) -> tuple[Clock, list]:
    """wise-ft style: merge state dicts in memory, save, load from disk, evaluate."""
    built = [build_evaluator(s) for s in EVALS]
    clock = Clock()
    evs = [Timed(e, clock) for e in built]
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
    clock.stop()
    return clock, results


def our_scan(pre: Path, ft: Path, alphas: list[float], spec: str) -> tuple[Clock, list]:
    built = [build_evaluator(s) for s in EVALS]
    clock = Clock()
    evs = [Timed(e, clock) for e in built]
    rep = scan(pre, ft, None, model=spec, alphas=",".join(f"{a:g}" for a in alphas), evaluators=evs)
    clock.stop()
    return clock, [p.metrics for p in rep.result.points]


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
    k, e = len(alphas), len(EVALS)
    n_res, s_res = naive[0][1], ours[0][1]
    for a, x, y in zip(alphas, n_res, s_res, strict=True):
        for name in x:
            for m in x[name]:
                assert abs(x[name][m] - y[name][m]) < 1e-4, (a, name, m, x[name][m], y[name][m])
    for _, runs in (("naive", naive), ("scan", ours)):
        assert all(len(c.calls) == k * e for c, _ in runs)  # one call per alpha and evaluator
    med = statistics.median
    print(f"machine: {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; ", end="")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    print(f"alphas: {k}; model: {args.model}; medians of {args.repeats} runs each")
    rows = {}
    for name, runs in (("naive loop", naive), ("sgmerge scan", ours)):
        clocks = [c for c, _ in runs]
        rows[name] = {
            unit: {
                "total": med(c.total(i) for c in clocks),
                "eval": med(c.inside(i) for c in clocks),
                "outside": med(c.outside(i) for c in clocks),
                "setup": med(c.setup(i) for c in clocks),
                "gap": med(g for c in clocks for g in c.gaps(i, e)),
            }
            for i, unit in ((0, "wall"), (1, "cpu"))
        }
        for c in clocks:
            print(
                f"  {name} run: total {c.total(0):.2f} s wall / {c.total(1):.2f} s cpu, "
                f"outside evaluators {c.outside(0):.2f} wall / {c.outside(1):.2f} cpu"
            )
    head = f"{'':14}{'':5}{'total s':>9}{'eval s':>9}{'outside s':>11}{'setup s':>9}"
    print(head + f"{'outside/alpha s':>17}{'gap/alpha s':>13}")
    for name, by in rows.items():
        for unit, r in by.items():
            print(
                f"{name:14}{unit:5}{r['total']:9.2f}{r['eval']:9.2f}{r['outside']:11.2f}"
                f"{r['setup']:9.2f}{r['outside'] / k:17.3f}{r['gap']:13.3f}"
            )
    for unit in ("cpu", "wall"):
        n, s = rows["naive loop"][unit], rows["sgmerge scan"][unit]
        r1 = s["outside"] / n["outside"]
        r2 = s["outside"] / s["eval"]
        r3 = s["gap"] / n["gap"]
        met1, met2 = ("met" if ok else "NOT met" for ok in (r1 <= 0.1, r2 < 0.1))
        print(
            f"SUMMARY ({unit} time outside evaluator calls) scan overhead / naive overhead = "
            f"{r1:.3f} (goal <= 0.1: {met1}); scan overhead / evaluation = {r2:.3f} "
            f"(goal < 0.1: {met2}); per-alpha gap scan / naive = {r3:.3f}"
        )


if __name__ == "__main__":
    main()
