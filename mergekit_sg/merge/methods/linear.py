"""Weighted averages: `lerp` (WiSE-FT), `linear` (N models) and `fisher` (N models, Fisher
weighted). No statistics step: each element depends on the same element of the inputs only."""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergekit_sg.merge.math import lerp_into
from mergekit_sg.merge.methods.base import ChunkCtx, Method, Params


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v}")
    return v


class LerpParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alpha: float = 0.5
    _f = field_validator("alpha")(classmethod(lambda cls, v: _finite(v)))


class Lerp(Method):
    """WiSE-FT: theta(alpha) = (1 - alpha) * theta_0 + alpha * theta_1 (slots 0, 1), computed
    in float32 and rounded once; alpha 0 and 1 are the inputs bit for bit."""

    name = "lerp"
    min_models = max_models = 2
    Shared = LerpParams

    def identity(self, p: Params, slots: int) -> int | None:
        a = p.shared.alpha  # type: ignore[attr-defined]
        return 0 if a == 0.0 else 1 if a == 1.0 else None

    def compute(self, xs: list[torch.Tensor], p: Params, stats: object, ctx: ChunkCtx):
        return torch.lerp(xs[0], xs[1], p.shared.alpha)  # type: ignore[attr-defined]

    def compute_into(self, out, xs, p, stats, ctx, compute_dtype) -> None:  # type: ignore[override]
        lerp_into(out, xs[0], xs[1], p.shared.alpha, compute_dtype)


class Normalize(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    normalize: bool = True


class Weight(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float
    _f = field_validator("weight")(classmethod(lambda cls, v: _finite(v)))


def _only_nonzero(p: Params) -> int | None:
    ws = [q.weight for q in p.per_input]  # type: ignore[union-attr]
    nz = [i for i, w in enumerate(ws) if w != 0.0]
    return nz[0] if len(nz) == 1 else None


class Linear(Method):
    """theta = sum_i w_i theta_i / sum_i w_i (`normalize`, default true) or sum_i w_i theta_i,
    over every listed model (mergekit `linear`). One model with a non-zero weight and
    `normalize` gives that model bit for bit."""

    name = "linear"
    Shared = Normalize
    PerInput = Weight
    grid_per_input = ("weight",)

    def identity(self, p: Params, slots: int) -> int | None:
        return _only_nonzero(p) if p.shared.normalize else None  # type: ignore[attr-defined]

    def compute(self, xs, p, stats, ctx):  # type: ignore[override]
        acc = torch.zeros_like(xs[0])
        for x, q in zip(xs, p.per_input, strict=True):
            acc.add_(x, alpha=q.weight)  # type: ignore[union-attr]
        if p.shared.normalize:  # type: ignore[attr-defined]
            total = sum(q.weight for q in p.per_input)  # type: ignore[union-attr]
            acc.div_(torch.tensor(total, dtype=acc.dtype))
        return acc


class FisherShared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fisher_floor: float = Field(default=1e-6, gt=0)


class Fisher(Method):
    """Fisher merging (Matena & Raffel) of N models with diagonal Fishers F_i (slots N..2N-1):

        theta = sum_i w_i F_i theta_i / sum_i w_i F_i,   F_i = max(F_i, fisher_floor)

    per element. Where a tensor has no Fisher entry the plan gives it the linear average
    sum_i w_i theta_i / sum_i w_i. Two models with weights (1 - a, a) are the Fisher-weighted
    WiSE-FT of `interpolate --fisher`; a = 0 and 1 give the endpoints bit for bit."""

    name = "fisher"
    Shared = FisherShared
    PerInput = Weight
    grid_per_input = ("weight",)

    def identity(self, p: Params, slots: int) -> int | None:
        return _only_nonzero(p)

    def compute(self, xs, p, stats, ctx):  # type: ignore[override]
        n = len(p.per_input)
        floor = p.shared.fisher_floor  # type: ignore[attr-defined]
        ws = [q.weight for q in p.per_input]  # type: ignore[union-attr]
        if len(xs) < 2 * n or any(f is None for f in xs[n:]):  # no Fisher for this tensor: linear
            if n == 2:  # Fisher-weighted WiSE-FT: plain WiSE-FT at w1 / (w0 + w1)
                return torch.lerp(xs[0], xs[1], ws[1] / (ws[0] + ws[1]))
            return Linear().compute(xs[:n], Params(Normalize(), p.per_input), None, ctx)
        num = den = None
        for i in range(n):
            wi = xs[n + i].clamp_min(floor).mul_(ws[i])
            term = wi * xs[i]
            num = term if num is None else num.add_(term)
            den = wi if den is None else den.add_(wi)
        assert num is not None and den is not None
        return num.div_(den)
