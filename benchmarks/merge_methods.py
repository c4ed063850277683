"""Benchmark: `mergekit_sg.merge` for ties / task_arithmetic / dare_ties / slerp (and lerp, the
WiSE-FT `interpolate`) against mergekit 0.1.5 and the I/O floor, side by side in one run, on
the synthetic TinyLlama-shaped 1.1B bfloat16 models of bench_models.py (sharded, 1GB shards):
a base, fine-tune 1 (bench_models' `ft`) and fine-tune 2 (this script: base + seeded noise).

Each configuration is a fresh process (wall time, peak RSS and peak anonymous memory of the
process tree sampled by procmon.py); the inputs are read once before every run (page cache
warm). Ours is the `sgmerge merge` command as a user runs it (`sgmerge interpolate` for lerp).
The floor (io_floor.py) reads every input of the method once and writes its output bytes with
O_DIRECT and fsync; `floor-K` writes K outputs. Ours and the floor leave with `os._exit` once
their outputs are on disk (`--api`: the Python API in `python -c`, and floors that go through
the interpreter's teardown, as in the runs before N). `grid` is ties with 4 lambdas in one
pass (OUT/lambda-V). mergekit runs with its best CPU options (see interpolate.py).
`--first-run` also runs ours with an empty hash cache (MERGEKIT_SG_CACHE): the first merge of
a set of sources computes every source file's SHA-256 for the card, later ones read them from
the cache, which every other run here has warm. `--huge-floor` also times the floors with
their buffers on 2 MB pages (io_floor.py --huge), as sgmerge's written buffers are;
`--baseline TREE` runs each method (and the grid) from another checkout too, alternated with
ours.

    .venv/bin/python benchmarks/merge_methods.py --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_models import build_pair  # noqa: E402
from interpolate import MERGEKIT_OPTIONS, ensure_mergekit  # noqa: E402
from procmon import Measured, run_measured  # noqa: E402

LARGEST_F32 = 32000 * 2048 * 4  # the embedding / lm_head, float32


def make_ft2(pre: Path, dest: Path, seed: int = 7) -> Path:
    """A second fine-tune: base + N(0, 2e-3) noise, shard for shard like the base."""
    import torch
    from safetensors.torch import load_file, save_file

    if (dest / "done").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for f in sorted(pre.glob("*.safetensors")):
        sd = load_file(f)
        for k, v in sd.items():
            noise = torch.randn(v.shape, generator=g, dtype=torch.float32).mul_(2e-3)
            sd[k] = (v.float() + noise).to(v.dtype)
        save_file(sd, dest / f.name, metadata={"format": "pt"})
        del sd
    for f in pre.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, dest / f.name)
    (dest / "done").write_text("")
    return dest


def configs(base: Path, ft1: Path, ft2: Path) -> dict[str, dict]:
    b, a, c = str(base), str(ft1), str(ft2)
    two = [{"model": a, "parameters": {"weight": 1.0, "density": 0.5}},
           {"model": c, "parameters": {"weight": 0.5, "density": 0.5}}]  # fmt: skip
    return {
        "ties": {"merge_method": "ties", "base_model": b, "dtype": "bfloat16", "models": two},
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": b,
            "dtype": "bfloat16",
            "models": [
                {"model": a, "parameters": {"weight": 1.0}},
                {"model": c, "parameters": {"weight": 0.5}},
            ],
        },
        "dare_ties": {
            "merge_method": "dare_ties",
            "base_model": b,
            "dtype": "bfloat16",
            "models": two,
        },
        "breadcrumbs": {
            "merge_method": "breadcrumbs",
            "base_model": b,
            "dtype": "bfloat16",
            "models": two,
        },
        "slerp": {
            "merge_method": "slerp",
            "base_model": b,
            "dtype": "bfloat16",
            "models": [{"model": b}, {"model": a}],
            "parameters": {"t": 0.4},
        },
    }


def _warm(files: list[Path]) -> None:
    buf = bytearray(64 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as h:
            while h.readinto(buf):
                pass
    os.sync()


def _shards(d: Path) -> list[str]:
    return [str(p) for p in sorted(d.glob("*.safetensors"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--methods", default="ties,task_arithmetic,dare_ties,slerp")
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--keep", action="store_true", help="(default now) keep fine-tune 2")
    ap.add_argument("--clean", action="store_true", help="delete fine-tune 2 at the end")
    ap.add_argument("--size", default="1.1b", help="bench_models size (tiny: 2 layers)")
    ap.add_argument("--baseline", type=Path, help="another checkout: also run `NAME before`")
    ap.add_argument(
        "--huge-floor", action="store_true", help="also the floors with 2 MB-page buffers"
    )
    ap.add_argument("--no-extras", action="store_true", help="skip floor-2, lerp and the grid")
    ap.add_argument(
        "--api", action="store_true",
        help="run ours through the Python API in `python -c` (interpreter teardown included, "
        "the floors' too: runs before N) instead of the sgmerge command",
    )  # fmt: skip
    ap.add_argument(
        "--first-run", action="store_true",
        help="also run ours with an empty hash cache, as the first merge of these sources is "
        "(every source file's SHA-256 computed; later runs read them from the cache)",
    )  # fmt: skip
    args = ap.parse_args()
    import yaml

    pair = build_pair(args.work, args.size)
    ft2 = make_ft2(pair.pre, pair.pre.parent / "ft2")
    mk = None if args.skip_mergekit else ensure_mergekit()
    out = args.work / "out-methods"
    out.mkdir(parents=True, exist_ok=True)
    inputs = {"2": [pair.pre, pair.ft], "3": [pair.pre, pair.ft, ft2]}
    rows: dict[str, list[Measured]] = {}

    def measure(name: str, cmd: list[str], n_in: str, first: bool = False) -> None:
        _warm([Path(f) for d in inputs[n_in] for f in _shards(d)])
        load = os.getloadavg()[0]
        env = None
        if first:  # a hash cache of its own, empty: the sources are hashed as on a first run
            cache = out / "hash-cache"
            shutil.rmtree(cache, ignore_errors=True)
            env = {**os.environ, "MERGEKIT_SG_CACHE": str(cache)}
        m = run_measured(cmd, env=env, log=out / f"{name}.log")
        if m.rc != 0:
            raise SystemExit(f"{name} failed: {(out / f'{name}.log').read_text()[-2000:]}")
        rows.setdefault(name, []).append(m)
        print(f"  {name:24s} {m.wall:7.2f} s  anon {m.anon / 2**20:6.0f} MB  "
              f"rss {m.rss / 2**20:6.0f} MB  load {load:.1f}", flush=True)  # fmt: skip
        for p in out.glob("dest*"):
            shutil.rmtree(p, ignore_errors=True)

    def floor(k: int, n_in: str, huge: bool = False) -> list[str]:
        extra = [a for d in inputs[n_in][2:] for a in ("--extra", *_shards(d))]
        extra += ["--huge"] if huge else []
        extra += ["--teardown"] if args.api else []
        dest = str(out / "dest-floor")
        return [sys.executable, str(HERE / "io_floor.py"), "--out", dest, "--k", str(k),
                "--pre", *_shards(pair.pre), "--ft", *_shards(pair.ft), *extra]  # fmt: skip

    def ours(cfg: Path, grid: str = "", root: Path | None = None) -> list[str]:
        pre = f"import sys; sys.path.insert(0, {str(root)!r}); " if root else "import sys; "
        dest = str(out / "dest-ours")
        if args.api:
            g = f", grid={{'lambda': [{grid}]}}" if grid else ""
            code = (
                f"{pre}from mergekit_sg.merge.merge import merge; merge({str(cfg)!r}, {dest!r}{g})"
            )
            return [sys.executable, "-c", code]
        return sgmerge(
            pre,
            "merge",
            str(cfg),
            "-o",
            dest,
            *(["--param", "lambda=" + grid.replace(" ", "")] if grid else []),
        )

    def sgmerge(pre: str, *argv: str) -> list[str]:
        """The `sgmerge` console script's own entry point (mergekit_sg.cli.app:run) with argv,
        from the tree that `pre` puts first on sys.path."""
        return [sys.executable, "-c", f"{pre}from mergekit_sg.cli.app import run; run()", *argv]

    cfgs = configs(pair.pre, pair.ft, ft2)
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        measure("floor (3 inputs)", floor(1, "3"), "3")
        if args.huge_floor:
            measure("floor (3 inputs, huge pages)", floor(1, "3", huge=True), "3")
        if not args.no_extras or "slerp" in args.methods:
            measure("floor (2 inputs)", floor(1, "2"), "2")
        if not args.no_extras:
            dest = str(out / "dest-i")
            if args.api:
                code = ("from mergekit_sg.merge.interpolate import interpolate; "
                        f"interpolate({str(pair.pre)!r}, {str(pair.ft)!r}, {dest!r})")  # fmt: skip
                measure("lerp (interpolate)", [sys.executable, "-c", code], "2")
            else:
                cmd = sgmerge(
                    "import sys; ", "interpolate", str(pair.pre), str(pair.ft), "-o", dest
                )
                measure("lerp (interpolate)", cmd, "2")
        for name in args.methods.split(","):
            cfg = out / f"{name}.yml"
            cfg.write_text(yaml.safe_dump(cfgs[name], sort_keys=False))
            n_in = "2" if name == "slerp" else "3"
            measure(f"{name} ours", ours(cfg), n_in)
            if args.baseline:
                measure(f"{name} before", ours(cfg, root=args.baseline), n_in)
            if args.first_run:
                measure(f"{name} ours, first run", ours(cfg), n_in, first=True)
                if args.baseline:
                    cmd = ours(cfg, root=args.baseline)
                    measure(f"{name} before, first run", cmd, n_in, first=True)
            if mk is not None:
                cmd = [str(mk), str(cfg), str(out / "dest-mk"), *MERGEKIT_OPTIONS]
                measure(f"{name} mergekit", cmd, n_in)
        if not args.no_extras:
            measure("floor-K (3 inputs, K=4)", floor(4, "3"), "3")
            if args.huge_floor:
                measure("floor-K huge pages", floor(4, "3", huge=True), "3")
            measure("ties grid K=4 ours", ours(out / "ties.yml", "0.4, 0.6, 0.8, 1.0"), "3")
            if args.baseline:
                grid = ours(out / "ties.yml", "0.4, 0.6, 0.8, 1.0", root=args.baseline)
                measure("ties grid K=4 before", grid, "3")

    med = {k: statistics.median(m.wall for m in v) for k, v in rows.items()}
    anon = {k: max(m.anon for m in v) for k, v in rows.items()}
    lines = ["| run | median wall s | peak anon MB |", "|---|---:|---:|"]
    lines += [f"| {k} | {med[k]:.1f} | {anon[k] / 2**20:.0f} |" for k in rows]
    lines += ["", "| ratio | value |", "|---|---:|"]
    f3, f2 = med["floor (3 inputs)"], med.get("floor (2 inputs)", 0.0)
    if "lerp (interpolate)" in med:
        lines.append(f"| lerp / floor (2 inputs) | {med['lerp (interpolate)'] / f2:.2f} |")
    for name in args.methods.split(","):
        f = f2 if name == "slerp" else f3
        lines.append(f"| {name} ours / floor | {med[f'{name} ours'] / f:.2f} |")
        for run in (f"{name} ours, first run", f"{name} before, first run"):
            if run in med:
                lines.append(f"| {run} / floor | {med[run] / f:.2f} |")
        if f"{name} before" in med:
            lines.append(f"| {name} before / floor | {med[f'{name} before'] / f:.2f} |")
            lines.append(
                f"| {name} ours / before | {med[f'{name} ours'] / med[f'{name} before']:.2f} |"
            )
        if f"{name} mergekit" in med:
            lines.append(
                f"| {name} ours / mergekit | {med[f'{name} ours'] / med[f'{name} mergekit']:.2f} |"
            )
    for who in ("ours", "before"):
        if f"ties grid K=4 {who}" in med:
            lines.append(
                f"| ties grid K=4 {who} / floor-K | "
                f"{med[f'ties grid K=4 {who}'] / med['floor-K (3 inputs, K=4)']:.2f} |"
            )
    for name, floor_row in (("ties", "floor (3 inputs, huge pages)"),
                            ("ties grid K=4", "floor-K huge pages")):  # fmt: skip
        if floor_row in med and f"{name} ours" in med:
            lines.append(
                f"| {name} ours / {floor_row} | {med[f'{name} ours'] / med[floor_row]:.2f} |"
            )
    budget = 512 * 2**20 + LARGEST_F32
    lines.append(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    lines.append(
        f"\nmemory goal: peak anon < {budget / 2**20:.0f} MB "
        "(512 MB + float32 of the largest tensor)"
    )
    text = "\n".join(lines)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps({k: [vars(m) for m in v] for k, v in rows.items()})
    )
    if args.clean:
        shutil.rmtree(pair.pre.parent / "ft2", ignore_errors=True)


if __name__ == "__main__":
    main()
