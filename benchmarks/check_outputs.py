"""Numerical check of merged checkpoints against the formula: every output value must be
theta(alpha) = (1 - alpha) * pre + alpha * ft evaluated in float32 and rounded once to the
output dtype.

Two float32 evaluation orders (torch.lerp's a + w * (b - a) and the textbook
(1 - w) * a + w * b, with or without fused multiply-adds) differ by a few float32 ulps of the
terms, so they can round to neighbouring bfloat16 values when the exact result lies near a
rounding boundary. A value is therefore accepted when it is the textbook float32 result rounded
once, or else a correct rounding of some value within TERMS_TOL * ((1 - w)|a| + w|b|) of the
exact (float64) result. Such disagreements are rare, except at exact ties: with bfloat16 inputs
and alpha = 0.1, (1 - w) a + w b often lies exactly half-way between two bfloat16 values, and
the float32 rounding of alpha itself decides (about 1% of the elements, measured). A bfloat16
accumulation (each product rounded to bfloat16 before the sum) is off by up to half a bfloat16
ulp of the terms, 2**13 times that tolerance, and fails on ~20% of the elements (measured).
Meant for outputs narrower than float32 (the benchmark's bfloat16)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

TERMS_TOL = 2.0**-21  # 8 float32 ulps of the terms' magnitude
CHUNK = 1 << 22


@dataclass
class CheckResult:
    """Per alpha: elements compared, accepted rounding-boundary cases, and failures."""

    alpha: float
    elements: int = 0
    boundary: int = 0
    bad: int = 0
    bad_tensors: list[str] = field(default_factory=list)
    bf16_accum_differs: int = 0  # how often a bf16 accumulation would differ (sampled)
    bf16_accum_elements: int = 0

    @property
    def ok(self) -> bool:
        return self.bad == 0 and self.elements > 0


def _tensor_files(d: Path) -> dict[str, Path]:
    """Tensor name -> file for a checkpoint directory (sharded or not)."""
    idx = sorted(d.glob("*.safetensors.index.json"))
    if idx:
        wm = json.loads(idx[0].read_text())["weight_map"]
        return {k: d / v for k, v in wm.items()}
    out: dict[str, Path] = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            out.update({k: f for k in h.keys()})  # noqa: SIM118
    return out


class _Files:
    """Open safetensors handles, one per file, read tensor by tensor."""

    def __init__(self, d: Path) -> None:
        self.where = _tensor_files(d)
        self._h: dict[Path, object] = {}

    def get(self, name: str) -> torch.Tensor:
        f = self.where[name]
        if f not in self._h:
            self._h[f] = safe_open(f, "pt")
        return self._h[f].get_tensor(name)  # type: ignore[attr-defined]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(
        {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    )


def _rounding_interval(o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] (float64): the real values that round to each element of `o` (finite floats)."""
    mag = _bits(o).to(torch.int64) & ((1 << (8 * o.element_size() - 1)) - 1)
    kind = _bits(o).dtype

    def value(m: torch.Tensor) -> torch.Tensor:
        return m.to(kind).view(o.dtype).double()

    v = value(mag)
    up = value(mag + 1) - v
    down = torch.where(mag > 0, v - value((mag - 1).clamp_min(0)), up)
    neg = o.double() < 0
    lo = torch.where(neg, -(v + up / 2), v - down / 2)
    hi = torch.where(neg, -(v - down / 2), v + up / 2)
    return lo, hi


def _explain(a: torch.Tensor, b: torch.Tensor, o: torch.Tensor, alpha: float) -> int:
    """How many of these (mismatching) elements are NOT a correct rounding of a value within
    the float32 tolerance of the exact result."""
    a64, b64 = a.double(), b.double()
    x = (1.0 - alpha) * a64 + alpha * b64
    tol = TERMS_TOL * ((1.0 - alpha) * a64.abs() + alpha * b64.abs()) + 1e-45
    lo, hi = _rounding_interval(o)
    return int(((hi < x - tol) | (lo > x + tol)).sum())


class _Scratch:
    """Reused float32 buffers, so checking allocates nothing per chunk."""

    def __init__(self) -> None:
        self.buf: dict[str, torch.Tensor] = {}

    def get(self, name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
        t = self.buf.get(name)
        if t is None or t.numel() < n or t.dtype != dtype:
            t = self.buf[name] = torch.empty(max(n, CHUNK), dtype=dtype)
        return t[:n]


def _check_chunk(
    a: torch.Tensor, b: torch.Tensor, outs: dict[float, torch.Tensor], res: dict, sc: _Scratch
) -> None:
    n = a.numel()
    af, bf = sc.get("a", n, torch.float32), sc.get("b", n, torch.float32)
    af.copy_(a)
    bf.copy_(b)
    t1, t2 = sc.get("t1", n, torch.float32), sc.get("t2", n, torch.float32)
    for alpha, o in outs.items():
        r = res[alpha]
        r.elements += n
        if alpha in (0.0, 1.0):
            src = (a if alpha == 0.0 else b).to(o.dtype)
            r.bad += int(torch.ne(_bits(src), _bits(o)).sum())
            continue
        torch.mul(af, 1.0 - alpha, out=t1)
        torch.mul(bf, alpha, out=t2)
        t1.add_(t2)
        ref = sc.get(f"ref-{o.dtype}", n, o.dtype)
        ref.copy_(t1)
        diff = torch.ne(_bits(ref), _bits(o))
        k = int(diff.sum())
        if k:
            bad = _explain(a[diff], b[diff], o[diff], alpha)
            r.bad += bad
            r.boundary += k - bad


def _bf16_accumulation(a: torch.Tensor, b: torch.Tensor, o: torch.Tensor, alpha: float, r) -> None:
    """How often the bf16-accumulated result (each term rounded) would differ from ours."""
    if alpha in (0.0, 1.0) or o.dtype != torch.bfloat16:
        return
    naive = a.to(torch.bfloat16) * (1.0 - alpha) + b.to(torch.bfloat16) * alpha
    r.bf16_accum_differs += int(torch.ne(_bits(naive), _bits(o)).sum())
    r.bf16_accum_elements += o.numel()


def check_outputs(
    pre: Path, ft: Path, outputs: dict[float, Path], sample_every: int = 8, stride: int = 1
) -> dict[float, CheckResult]:
    """Check each output directory (alpha -> dir) tensor by tensor against the formula; the
    inputs are read once for all outputs. `stride` > 1 checks every stride-th chunk of 4M
    elements of each tensor (its first chunk always)."""
    torch.set_num_threads(1)  # the machine's two cores are shared; one thread is faster here
    p, f = _Files(pre), _Files(ft)
    outs = {al: _Files(d) for al, d in outputs.items()}
    results = {al: CheckResult(al) for al in outputs}
    sc = _Scratch()
    for i, name in enumerate(sorted(f.where)):
        a, b = p.get(name).reshape(-1), f.get(name).reshape(-1)
        got: dict[float, torch.Tensor] = {}
        for al, o_files in outs.items():
            o = o_files.get(name) if name in o_files.where else None
            if o is None or o.numel() != b.numel():
                results[al].bad += b.numel()
                results[al].bad_tensors.append(name)
            else:
                got[al] = o.reshape(-1)
        before = {al: results[al].bad for al in got}
        for s in range(0, b.numel(), CHUNK * stride):
            e = min(s + CHUNK, b.numel())
            _check_chunk(a[s:e], b[s:e], {al: o[s:e] for al, o in got.items()}, results, sc)
            if i % sample_every == 0 and s == 0:
                for al, o in got.items():
                    _bf16_accumulation(a[s:e], b[s:e], o[s:e], al, results[al])
        for al in got:
            if results[al].bad > before[al]:
                results[al].bad_tensors.append(name)
    for al, o_files in outs.items():
        extra = set(o_files.where) - set(f.where)
        results[al].bad_tensors += sorted(extra)
        results[al].bad += len(extra)
    return results


def _same_file(x: Path, y: Path, block: int = 16 << 20) -> bool:
    if x.stat().st_size != y.stat().st_size:
        return False
    with open(x, "rb") as fx, open(y, "rb") as fy:
        while True:
            bx, by = fx.read(block), fy.read(block)
            if bx != by:
                return False
            if not bx:
                return True


def same_weight_files(x: Path, y: Path) -> bool:
    """Both directories hold byte-identical safetensors files (and index) of the same names."""
    names = sorted(p.name for p in x.glob("*.safetensors*"))
    if not names or names != sorted(p.name for p in y.glob("*.safetensors*")):
        return False
    return all(_same_file(x / n, y / n) for n in names)


def same_tensor_bytes(x: Path, y: Path) -> bool:
    """Both checkpoint directories hold the same tensor names and bytes (headers aside)."""
    fx, fy = _Files(x), _Files(y)
    if set(fx.where) != set(fy.where):
        return False
    for name in fx.where:
        a, b = fx.get(name), fy.get(name)
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(_bits(a), _bits(b)):
            return False
    return True
