"""Methods that look at whole-tensor geometry: `slerp` (the angle between two models) and
`model_stock` (the angle between fine-tunes around the base). Their statistics step streams
the tensor once (float64 sums); the chunk step is then a fixed linear combination (SLERP's
in the C kernel of `native` where it is built)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator

from mergekit_sg.merge.methods import native
from mergekit_sg.merge.methods.base import (
    STATS_CHUNK,
    ChunkCtx,
    Method,
    Params,
    Reader,
    stream_pass,
)

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


class SlerpParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    t: float

    @field_validator("t")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v


class Slerp(Method):
    """Spherical interpolation from the base (slot 0) to the other model (slot 1), per tensor:

        cos = <a/|a|, b/|b|>,  theta = acos(cos)
        out = sin((1-t) theta)/sin(theta) * a + sin(t theta)/sin(theta) * b

    with plain (1-t) a + t b when |cos| > 0.9995 (nearly parallel) — as mergekit. Norms below
    1e-8 count as 1. t = 0 and t = 1 give the inputs bit for bit."""

    name = "slerp"
    base = "required"
    min_models = max_models = 1
    Shared = SlerpParams

    def identity(self, p: Params, slots: int) -> int | None:
        t = p.shared.t  # type: ignore[attr-defined]
        return 0 if t == 0.0 else 1 if t == 1.0 else None

    def stats_key(self, p: Params) -> Hashable | None:
        return "angle"

    def stats(self, read: Reader, ctx: ChunkCtx, p: Params, slots: int) -> Any:
        """cos of the angle, from float64 sums of a.a, b.b and a.b (the C kernel's, in 8
        lanes, where it is built: the same up to the order of the additions)."""
        lib = native.lib()
        raw = getattr(read, "raw", None)
        mapped = getattr(read, "mapped", None)
        views = [mapped(0), mapped(1)] if lib is not None and mapped is not None else [None]
        if all(v is not None and v[1] in _CODES for v in views):
            sums = np.zeros(3, np.float64)
            (a, da), (b, db) = views  # type: ignore[misc]
            lib.geo_dots(
                a.ctypes.data, _CODES[da], b.ctypes.data, _CODES[db], ctx.numel,
                sums.ctypes.data,
            )  # fmt: skip
            return _cos(*(float(v) for v in sums))
        if lib is not None and raw is not None:
            sums = np.zeros(3, np.float64)
            scratch = [torch.empty(STATS_CHUNK * 8, dtype=torch.uint8) for _ in range(2)]
            for s in range(0, ctx.numel, STATS_CHUNK):
                c = min(STATS_CHUNK, ctx.numel - s)
                a, b = raw(0, s, c, scratch[0]), raw(1, s, c, scratch[1])
                if a.dtype not in _CODES or b.dtype not in _CODES:
                    break
                lib.geo_dots(
                    a.data_ptr(), _CODES[a.dtype], b.data_ptr(), _CODES[b.dtype], c,
                    sums.ctypes.data,
                )  # fmt: skip
            else:
                return _cos(*(float(v) for v in sums))
        aa = bb = ab = 0.0
        for s, a in stream_pass(read, 0, ctx.numel):
            b = read(1, s, a.numel())
            a64, b64 = a.double(), b.double()
            aa += float(a64.dot(a64))
            bb += float(b64.dot(b64))
            ab += float(a64.dot(b64))
        return _cos(aa, bb, ab)

    def _coefficients(self, p: Params, stats: Any) -> tuple[float, float]:
        t = p.shared.t  # type: ignore[attr-defined]
        cos = float(stats)
        if abs(cos) > DOT_THRESHOLD:
            return 1.0 - t, t
        theta = math.acos(cos)
        return math.sin((1.0 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)

    def compute(self, xs, p, stats, ctx):  # type: ignore[override]
        ca, cb = self._coefficients(p, stats)
        return xs[0].mul_(ca).add_(xs[1], alpha=cb)

    def compute_into(self, out, xs, p, stats, ctx, compute_dtype) -> None:  # type: ignore[override]
        """The C kernel's fma(b, cb, a * ca) in one pass where it applies (float32 on the CPU,
        float32/bfloat16 in and out): torch's mul_ then add_(alpha=), bit for bit."""
        lib = native.lib()
        a, b = xs[0], xs[1]
        if (
            lib is None
            or compute_dtype != torch.float32
            or a is None
            or b is None
            or out.device.type != "cpu"
            or any(t.dtype not in _CODES or not t.is_contiguous() for t in (a, b, out))
        ):
            super().compute_into(out, xs, p, stats, ctx, compute_dtype)
            return
        ca, cb = self._coefficients(p, stats)
        lib.geo_lin2(
            a.data_ptr(), _CODES[a.dtype], b.data_ptr(), _CODES[b.dtype], ca, cb,
            out.numel(), out.data_ptr(), _CODES[out.dtype],
        )  # fmt: skip


_CODES = {torch.float32: native.DT_F32, torch.bfloat16: native.DT_BF16}


def _cos(aa: float, bb: float, ab: float) -> float:
    na, nb = math.sqrt(aa), math.sqrt(bb)
    na, nb = (na if na > NORM_EPS else 1.0), (nb if nb > NORM_EPS else 1.0)
    return max(-1.0, min(1.0, ab / (na * nb)))


class ModelStockParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    filter_wise: bool = False

    @field_validator("filter_wise")
    @classmethod
    def _no_filter_wise(cls, v: bool) -> bool:
        if v:
            raise ValueError("filter_wise: true is not supported (whole-tensor angles only)")
        return v


class ModelStock(Method):
    """Model Stock (Jang et al.), k fine-tunes w_i around the base w_0 (slot 0), per tensor:

        cos = mean_{i<j} <w_i - w_0, w_j - w_0> / max(|w_i - w_0| |w_j - w_0|, 1e-6)
        t   = k cos / (1 + (k - 1) cos)    (0 where the denominator is below 1e-6)
        out = t * mean_i w_i + (1 - t) * w_0

    as mergekit's model_stock (not filter-wise). Needs at least two fine-tunes."""

    name = "model_stock"
    base = "required"
    min_models = 2
    Shared = ModelStockParams

    def stats_key(self, p: Params) -> Hashable | None:
        return "cos"

    def stats(self, read: Reader, ctx: ChunkCtx, p: Params, slots: int) -> Any:
        k = slots - 1
        dots = torch.zeros(k, k, dtype=torch.float64)
        for s, w0 in stream_pass(read, 0, ctx.numel):
            offs = torch.stack([read(i, s, w0.numel()).sub_(w0) for i in range(1, slots)])
            o = offs.double()
            dots += o @ o.T
        norms = dots.diagonal().sqrt()
        cos = []
        for i in range(k):
            for j in range(i + 1, k):
                c = float(dots[i, j]) / max(float(norms[i] * norms[j]), 1e-6)
                cos.append(max(-1.0, min(1.0, c)))
        c = sum(cos) / len(cos)
        den = 1 + (k - 1) * c
        return 0.0 if abs(den) < 1e-6 else k * c / den

    def compute(self, xs, p, stats, ctx):  # type: ignore[override]
        t = float(stats)
        avg = xs[1].clone()
        for x in xs[2:]:
            avg.add_(x)
        avg.div_(len(xs) - 1)
        return avg.mul_(t).add_(xs[0], alpha=1.0 - t)
