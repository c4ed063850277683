"""Where one merge's time goes: the CPU and wall seconds of each stage of the executor (the
statistics thread, the reader, the chunk compute, the writer) for one in-process
`mergekit_sg.merge` of a config, and A/B of source trees by alternating runs, each a fresh
process (medians over the repeats). CPU seconds are steadier than wall clock on a machine whose
disk speed moves: a change to the kernels shows there first.

    python benchmarks/merge_threads.py CONFIG.yml [--grid 0.4,0.6,0.8,1.0] \
        [--trees OLD_TREE NEW_TREE --repeats 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("stats_worker", "reader", "compute", "writer")


def measure(config: Path, out: Path, grid: list[float] | None) -> dict[str, Any]:
    """One merge in this process: wall and process CPU, and (cpu, wall) of each stage."""
    import yaml

    from mergekit_sg.merge import executor as ex
    from mergekit_sg.merge.merge import merge

    times: dict[str, tuple[float, float]] = {}
    originals = {name: getattr(ex._Executor, name) for name in STAGES}

    def timed(fn: Any, name: str) -> Any:
        def run(self: Any, *a: Any, **k: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                times[name] = (time.thread_time() - c0, time.perf_counter() - w0)

        return run

    cfg = yaml.safe_load(config.read_text())
    shutil.rmtree(out, ignore_errors=True)
    try:
        for name, fn in originals.items():
            setattr(ex._Executor, name, timed(fn, name))
        w0, c0 = time.perf_counter(), time.process_time()
        merge(cfg, out, grid={"lambda": grid} if grid else None, model_card=False, force=True)
        res = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
    finally:
        for name, fn in originals.items():
            setattr(ex._Executor, name, fn)
        shutil.rmtree(out, ignore_errors=True)
    for name, (c, w) in times.items():
        res[f"{name} cpu"], res[f"{name} wall"] = c, w
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--grid", default="", help="lambdas of a grid, comma-separated")
    ap.add_argument("--trees", nargs="*", default=[], help="source trees to alternate")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, help="scratch output (default: beside the config)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = args.out or args.config.resolve().parent / "threads-out"
    grid = [float(v) for v in args.grid.split(",")] if args.grid else None
    if args.child:
        print(json.dumps(measure(args.config.resolve(), out, grid)))
        return
    trees = args.trees or [str(Path(__file__).resolve().parent.parent)]
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    for r in range(args.repeats):
        # ABBA: the run after another one came out ~10% slower in wall clock whichever tree
        # it was (the disk still busy with the last run's output), so the order alternates
        for t in trees if r % 2 == 0 else trees[::-1]:
            cmd = [sys.executable, __file__, str(args.config), "--out", str(out), "--child"]
            if args.grid:
                cmd += ["--grid", args.grid]
            env = {**os.environ, "PYTHONPATH": t}
            line = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            res = json.loads(line.stdout.strip().splitlines()[-1])
            runs[t].append(res)
            print(f"{r + 1}/{args.repeats} {t}: wall {res['wall']:.1f} s, cpu {res['cpu']:.1f} s")
    keys = ["wall", "cpu"] + [f"{s} cpu" for s in STAGES] + ["stats_worker wall"]
    print("\n| tree | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for t, rs in runs.items():
        meds = [statistics.median(r.get(k, float("nan")) for r in rs) for k in keys]
        print(f"| {t} | " + " | ".join(f"{m:.2f}" for m in meds) + " |")


if __name__ == "__main__":
    main()
