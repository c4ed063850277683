"""Benchmark: `sgmerge interpolate` against mergekit's linear merge and against the I/O floor,
side by side in one run, on synthetic Llama-style pairs (1.1B and 3.3B parameters, bfloat16).

For each size, alternating within every repeat:
  ours          sgmerge interpolate PRE FT --alpha 0.5 (source-hash cache warm)
  ours-lib      the same merge through the Python API (`interpolate(...)`) in a fresh python:
                the pipeline without the CLI's start-up and exit
  ours-cold     the same with an empty source-hash cache (both inputs are SHA-256'd)
  mergekit      mergekit-yaml, linear, alpha 0.5, its best options on this machine
  floor         fresh python + torch, read both inputs once, write one output the way ours
                does (O_DIRECT from aligned buffers, fsync), see io_floor.py
  floor-plain   the same through the page cache with the kernel's default writeback (what
                cp or safetensors' save_file get), fsync at the end
  multi         sgmerge interpolate --alpha A1,...,AK (one pass, K outputs)
  singles       K separate single-alpha runs of ours (wall times summed)
  floor-K       fresh python + torch, read both inputs once, write K outputs' worth
Each run is a fresh process; wall time, peak RSS and peak anonymous memory (RssAnon) of the
process tree are sampled from /proc every 10 ms. Before every run the inputs are read once
(page cache warm) and dirty pages are synced. The outputs of the first repeat are checked
against the float32 formula rounded once (check_outputs.py; at 3.3b the multi-alpha outputs on
every 4th chunk, and mergekit's only at 1.1b), and the K single runs byte for byte against the
multi-alpha outputs. mergekit 0.1.5 is installed into benchmarks/.venv-mergekit on first use.
Generated checkpoints live in benchmarks/work/ and are deleted at the end unless --keep.

    .venv/bin/python benchmarks/interpolate.py --sizes 1.1b,3.3b --repeats 3 --repeats-large 1
    .venv/bin/python benchmarks/interpolate.py --sizes tiny --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_models import Pair, build_pair  # noqa: E402
from check_outputs import CheckResult, check_outputs, same_weight_files  # noqa: E402
from procmon import Measured, run_measured  # noqa: E402

MERGEKIT_VERSION = "0.1.5"
MERGEKIT_TORCH = "torch==2.13.0"  # a CPU build is all mergekit needs here
MERGEKIT_VENV = HERE / ".venv-mergekit"
# Best of the options mergekit 0.1.5 has for a CPU linear merge, measured on this machine
# (--async-write overlaps the shard write with the next shard's compute; the rest are no-ops
# or slower here: --lazy-unpickle only affects .bin inputs, --low-cpu-memory / --read-to-gpu
# need an accelerator, --write-threads > 1 and -j 2 were not faster).
MERGEKIT_OPTIONS = ["--async-write", "--no-copy-tokenizer", "--quiet"]
DEFAULT_ALPHAS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
DISK_MARGIN = 6 << 30


@dataclass
class Row:
    """All repeats of one measured configuration."""

    name: str
    runs: list[Measured] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def peak(self, attr: str) -> int:
        return max(getattr(r, attr) for r in self.runs)


@dataclass
class SizeReport:
    size: str
    params: int
    input_bytes: int
    output_bytes: int
    alphas: list[float]
    rows: dict[str, Row] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    loadavg: list[str] = field(default_factory=list)


# --- environment ---------------------------------------------------------------------------


def ensure_mergekit() -> Path:
    """mergekit-yaml from its own virtual environment, created on first use (pinned)."""
    exe = MERGEKIT_VENV / "bin" / "mergekit-yaml"
    if exe.exists():
        return exe
    print(f"installing mergekit {MERGEKIT_VERSION} into {MERGEKIT_VENV} ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(MERGEKIT_VENV)], check=True)
    pip = [str(MERGEKIT_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, MERGEKIT_TORCH, f"mergekit=={MERGEKIT_VERSION}"], check=True)
    return exe


def _sgmerge() -> str:
    exe = Path(sys.executable).parent / "sgmerge"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: run this with the project's venv python")
    return str(exe)


def _warm(pair: Pair) -> None:
    """Read both inputs once (page cache warm) and flush dirty pages left by earlier runs."""
    for f in pair.input_files:
        with open(f, "rb", buffering=0) as h:
            buf = bytearray(64 << 20)
            while h.readinto(buf):
                pass
    os.sync()


def _rm(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    for p in path.parent.glob(f".{path.name}.sgmerge-tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def _shards(d: Path) -> list[str]:
    return [str(p) for p in sorted(d.glob("*.safetensors"))]


def _mergekit_config(pair: Pair, alpha: float, path: Path) -> Path:
    path.write_text(
        "merge_method: linear\n"
        "dtype: bfloat16\n"
        "models:\n"
        f"  - model: {pair.pre}\n    parameters: {{weight: {1 - alpha!r}}}\n"
        f"  - model: {pair.ft}\n    parameters: {{weight: {alpha!r}}}\n"
    )
    return path


# --- one size --------------------------------------------------------------------------------


class Bench:
    """Runs and records every configuration for one pair."""

    def __init__(self, pair: Pair, work: Path, alphas: list[float], args: argparse.Namespace):
        self.pair, self.work, self.alphas, self.args = pair, work, alphas, args
        self.out = work / f"out-{pair.size}"
        self.out.mkdir(parents=True, exist_ok=True)
        self.warm_cache = work / "hash-cache"
        self.rep = SizeReport(pair.size, 0, 0, 0, alphas)
        self.sg = _sgmerge()
        self.mk = ensure_mergekit() if not args.skip_mergekit else None

    def env(self, cache: Path) -> dict[str, str]:
        return {**os.environ, "MERGEKIT_SG_CACHE": str(cache)}

    def measure(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Measured:
        _warm(self.pair)
        self.rep.loadavg.append(f"{name}: {os.getloadavg()[0]:.1f}")
        m = run_measured(cmd, env=env, log=self.out / f"{name}.log")
        if m.rc != 0:
            log = (self.out / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{name} failed (exit {m.rc}):\n{log}")
        self.rep.rows.setdefault(name, Row(name)).runs.append(m)
        print(
            f"  {name:12s} {m.wall:7.2f} s  rss {m.rss / 2**20:6.0f} MB  "
            f"anon {m.anon / 2**20:5.0f} MB  cpu {m.cpu:6.2f} s",
            flush=True,
        )
        return m

    def ours_cmd(self, alphas: list[float], dest: Path) -> list[str]:
        a = ",".join(f"{x:g}" for x in alphas)
        return [self.sg, "interpolate", str(self.pair.pre), str(self.pair.ft), "--alpha", a,
                "-o", str(dest), "-q"]  # fmt: skip

    def floor_cmd(self, k: int, writeback: str, dest: Path) -> list[str]:
        return [sys.executable, str(HERE / "io_floor.py"), "--out", str(dest), "--k", str(k),
                "--writeback", writeback, "--pre", *_shards(self.pair.pre),
                "--ft", *_shards(self.pair.ft)]  # fmt: skip

    def check(self, label: str, outputs: dict[float, Path], stride: int = 1) -> None:
        if self.args.no_check:
            return
        t = time.perf_counter()
        res = check_outputs(self.pair.pre, self.pair.ft, outputs, stride=stride)
        for al, r in res.items():
            self.rep.checks[f"{label} alpha={al:g}"] = _check_record(r)
            if not r.ok:
                raise SystemExit(f"{label} alpha={al:g}: output is not the float32 formula "
                                 f"rounded once: {_check_record(r)}")  # fmt: skip
        part = "every element" if stride == 1 else f"every {stride}th chunk of every tensor"
        print(
            f"  checked {label}: {len(res)} output(s) ok, {part} ({time.perf_counter() - t:.0f} s)"
        )

    # The configurations ------------------------------------------------------------------
    def ours(self, first: bool) -> None:
        dest = self.out / "ours"
        self.measure("ours", self.ours_cmd([0.5], dest), self.env(self.warm_cache))
        if first:
            self.check("ours", {0.5: dest})
        _rm(dest)

    def ours_lib(self, first: bool) -> None:
        dest = self.out / "ours-lib"
        code = (
            "from mergekit_sg.merge.interpolate import interpolate; "
            f"interpolate({str(self.pair.pre)!r}, {str(self.pair.ft)!r}, {str(dest)!r}, "
            "alpha=[0.5])"
        )
        self.measure("ours-lib", [sys.executable, "-c", code], self.env(self.warm_cache))
        _rm(dest)

    def ours_cold(self, first: bool) -> None:
        dest = self.out / "ours-cold"
        with tempfile.TemporaryDirectory(dir=self.work) as cache:
            self.measure("ours-cold", self.ours_cmd([0.5], dest), self.env(Path(cache)))
        _rm(dest)

    def mergekit(self, first: bool) -> None:
        if self.mk is None:
            return
        dest = self.out / "mergekit"
        cfg = _mergekit_config(self.pair, 0.5, self.out / "mergekit.yaml")
        self.measure("mergekit", [str(self.mk), str(cfg), str(dest), *MERGEKIT_OPTIONS])
        if first and self.pair.size != "3.3b":  # its arithmetic is shown at 1.1b already
            self.check("mergekit", {0.5: dest})
        _rm(dest)

    def floor(self, first: bool, writeback: str = "direct") -> None:
        dest = self.out / f"floor-{writeback}"
        name = "floor" if writeback == "direct" else f"floor-{writeback}"
        self.measure(name, self.floor_cmd(1, writeback, dest))
        _rm(dest)

    def multi_and_singles(self, first: bool) -> None:
        """The K-alpha pass, then K single runs compared byte for byte with its outputs."""
        multi = self.out / "multi"
        self.measure("multi", self.ours_cmd(self.alphas, multi), self.env(self.warm_cache))
        if first:
            stride = 4 if self.pair.size == "3.3b" else 1  # keeps the large run in budget
            self.check("multi", {a: multi / f"alpha-{a:g}" for a in self.alphas}, stride)
        singles = Row("singles")
        anon = rss = 0
        for a in self.alphas:
            dest = self.out / f"single-{a:g}"
            _warm(self.pair)
            m = run_measured(self.ours_cmd([a], dest), env=self.env(self.warm_cache))
            if m.rc != 0:
                raise SystemExit(f"single alpha={a:g} failed (exit {m.rc})")
            singles.runs.append(m)
            anon, rss = max(anon, m.anon), max(rss, m.rss)
            if first and not same_weight_files(dest, multi / f"alpha-{a:g}"):
                raise SystemExit(f"alpha={a:g}: single run differs from the multi-alpha output")
            _rm(dest)
        total = Measured(
            sum(r.wall for r in singles.runs), rss, anon, 0, sum(r.cpu for r in singles.runs)
        )
        self.rep.rows.setdefault("singles", Row("singles")).runs.append(total)
        print(f"  {'singles':12s} {total.wall:7.2f} s  ({len(self.alphas)} runs)"
              + ("; byte-identical to multi" if first else ""), flush=True)  # fmt: skip
        _rm(multi)

    def floor_k(self, first: bool) -> None:
        dest = self.out / "floor-k"
        self.measure("floor-K", self.floor_cmd(len(self.alphas), "direct", dest))
        _rm(dest)

    def warmup(self) -> None:
        """Fill the warm source-hash cache (untimed) so 'ours' measures the steady state."""
        dest = self.out / "warmup"
        _warm(self.pair)
        subprocess.run(self.ours_cmd([0.5], dest), env=self.env(self.warm_cache), check=True)
        _rm(dest)

    def run(self, repeats: int) -> SizeReport:
        self.warmup()
        singles_cfg = [self.ours, self.ours_lib, self.ours_cold, self.mergekit, self.floor,
                       lambda first: self.floor(first, "plain")]  # fmt: skip
        for r in range(repeats):
            print(f"[{self.pair.size}] repeat {r + 1}/{repeats}", flush=True)
            order = singles_cfg[r % len(singles_cfg) :] + singles_cfg[: r % len(singles_cfg)]
            for step in order:
                step(r == 0)
            multi_cfg = [self.multi_and_singles, self.floor_k]
            for step in multi_cfg if r % 2 == 0 else multi_cfg[::-1]:
                step(r == 0)
        return self.rep


def _check_record(r: CheckResult) -> dict:
    d = asdict(r)
    d["ok"] = r.ok
    d["bad_tensors"] = d["bad_tensors"][:5]
    return d


# --- report ----------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


RATIOS = (
    ("ours / floor (goal <= 1.25)", "ours", "floor"),
    ("ours-lib / floor", "ours-lib", "floor"),
    ("ours-cold / floor", "ours-cold", "floor"),
    ("ours / floor-plain", "ours", "floor-plain"),
    ("ours / mergekit", "ours", "mergekit"),
    ("multi / floor-K (goal <= 1.25)", "multi", "floor-K"),
    ("multi / K singles", "multi", "singles"),
)


def ratios(rows: dict[str, Row]) -> list[tuple[str, float]]:
    """Ratios of median wall times, for the configurations that ran."""
    return [
        (label, rows[a].median("wall") / rows[b].median("wall"))
        for label, a, b in RATIOS
        if a in rows and b in rows
    ]


def table(reports: list[SizeReport]) -> str:
    """Markdown table of medians and ratios, one block per size."""
    lines = []
    for rep in reports:
        rows = rep.rows
        k = len(rep.alphas)
        lines += [
            f"### {rep.size}: {rep.params / 1e9:.2f}B parameters, "
            f"{rep.output_bytes / 1e9:.2f} GB per output, K = {k} "
            f"(alphas {','.join(f'{a:g}' for a in rep.alphas)})",
            "",
            "| run | median wall s | runs | peak RSS MB | peak anon MB | median CPU s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            lines.append(
                f"| {name} | {row.median('wall'):.2f} | {len(row.runs)} | "
                f"{_mb(row.peak('rss'))} | {_mb(row.peak('anon'))} | {row.median('cpu'):.2f} |"
            )
        lines += ["", "| ratio | value |", "|---|---:|"]
        lines += [f"| {label} | {v:.2f} |" for label, v in ratios(rows)]
        if rep.checks:
            c = rep.checks.values()
            elems = sum(x["elements"] for x in c)
            bound = max(x["boundary"] / max(x["elements"], 1) for x in c)
            acc = sum(x["bf16_accum_differs"] for x in c) / max(
                sum(x["bf16_accum_elements"] for x in c), 1
            )
            lines += [
                "",
                f"Numerics: {len(rep.checks)} outputs, {elems / 1e9:.1f}G values checked, "
                f"{sum(x['bad'] for x in c)} not float32-rounded-once; exact-tie roundings that "
                f"differ from the textbook order: at most {bound:.2%} of an output; a bfloat16 "
                f"accumulation would have differed on {acc:.1%} (sampled).",
            ]
        lines.append("")
    return "\n".join(lines)


def _alphas_for(alphas: list[float], work: Path, out_bytes: int) -> list[float]:
    """As many of the alphas as the free disk allows (K outputs live at once), evenly spread."""
    free = shutil.disk_usage(work).free
    k = max(1, min(len(alphas), (free - DISK_MARGIN) // max(out_bytes, 1) - 1))
    if k >= len(alphas):
        return alphas
    step = (len(alphas) - 1) / max(k - 1, 1)
    picked = [alphas[round(i * step)] for i in range(k)]
    print(f"  disk: {free / 1e9:.0f} GB free, so K = {k} of {len(alphas)} alphas: {picked}")
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1.1b,3.3b", help="comma list of 1.1b, 3.3b, tiny")
    ap.add_argument("--repeats", type=int, default=3, help="repeats for 1.1b and tiny")
    ap.add_argument("--repeats-large", type=int, default=1, help="repeats for 3.3b")
    ap.add_argument("--alphas", default=DEFAULT_ALPHAS, help="alphas of the multi-alpha pass")
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip the numerical checks")
    ap.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    alphas = [float(a) for a in args.alphas.split(",")]
    reports = []
    started = time.perf_counter()
    try:
        for size in args.sizes.split(","):
            t = time.perf_counter()
            pair = build_pair(args.work, size)
            print(f"[{size}] pair ready in {time.perf_counter() - t:.0f} s", flush=True)
            rep = _run_size(pair, args, alphas)
            reports.append(rep)
            if not args.keep:
                shutil.rmtree(args.work / f"llama-{size}", ignore_errors=True)
    finally:
        if not args.keep:
            for p in args.work.glob("out-*"):
                shutil.rmtree(p, ignore_errors=True)
    text = table(reports)
    print("\n" + text)
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = args.work / f"interpolate-{stamp}.json"
    raw.write_text(json.dumps([_report_json(r) for r in reports], indent=1))
    print(f"raw measurements: {raw}")
    if args.markdown:
        args.markdown.write_text(text + "\n")


def _run_size(pair: Pair, args: argparse.Namespace, alphas: list[float]) -> SizeReport:
    from safetensors import safe_open

    params = 0
    for f in sorted(pair.ft.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            params += sum(_numel(h, k) for k in h.keys())  # noqa: SIM118
    out_bytes = sum(f.stat().st_size for f in pair.ft.glob("*.safetensors"))
    picked = _alphas_for(alphas, args.work, out_bytes)
    bench = Bench(pair, args.work, picked, args)
    bench.rep.params, bench.rep.output_bytes = params, out_bytes
    bench.rep.input_bytes = sum(f.stat().st_size for f in pair.input_files)
    repeats = args.repeats_large if pair.size == "3.3b" else args.repeats
    return bench.run(repeats)


def _numel(h: object, name: str) -> int:
    n = 1
    for s in h.get_slice(name).get_shape():  # type: ignore[attr-defined]
        n *= s
    return n


def _report_json(rep: SizeReport) -> dict:
    d = {k: v for k, v in asdict(rep).items() if k != "rows"}
    d["rows"] = {n: [asdict(m) for m in row.runs] for n, row in rep.rows.items()}
    return d


if __name__ == "__main__":
    main()
