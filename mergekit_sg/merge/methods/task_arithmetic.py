"""Task-vector methods (mergekit's generalized task arithmetic): with task vectors
tau_i = theta_i - theta_base,

    tau_i'  = sparsify_i(tau_i)                     (ties: top-`density` by magnitude;
                                                     dare: Bernoulli(`density`) keep;
                                                     breadcrumbs: drop the top `gamma`,
                                                     keep the next `density`)
    tau_i'' = rescale ? tau_i' * ||tau_i||_1 / ||tau_i'||_1 : tau_i'
    m       = sign election ? (sum_i w_i tau_i'' > = 0 ? +1 : -1)     (ties, dare_ties)
    M_i     = sign election ? [sign(w_i tau_i'') == m] : 1
    delta   = sum_i M_i w_i tau_i'' / (normalize ? sum_i M_i w_i : 1)
    theta   = theta_base + lambda * delta

`normalize` divides by the sum of the weights that voted (1 where none did, or where the sum
is below 1e-8 without election). Defaults as in mergekit 0.1.5: normalize is true for ties
and false for the others, rescale true for dare, lambda 1, gamma 0.01. The magnitude
thresholds and the L1 norms are the statistics step; the elementwise rest runs per chunk."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergekit_sg.merge.methods.base import (
    ChunkCtx,
    Method,
    Params,
    Reader,
    stream_pass,
    tensor_seed,
)
from mergekit_sg.merge.methods.select import TopSet, top_set

DARE_BLOCK = 1 << 16  # random draws come in blocks of this many elements, whatever the chunk


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v}")
    return v


class GTAShared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    normalize: bool = False
    rescale: bool = False
    lambda_: float = Field(default=1.0, alias="lambda")
    int8_mask: bool = False  # mergekit's mask dtype: no effect on the values
    _f = field_validator("lambda_")(classmethod(lambda cls, v: _finite(v)))

    def model_dump(self, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        return super().model_dump(by_alias=True, **kw)


class TiesShared(GTAShared):
    normalize: bool = True


class DareShared(GTAShared):
    rescale: bool = True


class TaskInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float
    density: float = Field(default=1.0, gt=0.0, le=1.0)
    _f = field_validator("weight")(classmethod(lambda cls, v: _finite(v)))


class BreadcrumbsInput(TaskInput):
    gamma: float = Field(default=0.01, ge=0.0, le=1.0)


Sparsify = Literal["none", "magnitude", "random", "outliers"]


def dare_keep(ctx: ChunkCtx, slot: int, start: int, count: int, density: float) -> torch.Tensor:
    """The Bernoulli(density) keep mask of elements [start, start+count) of one input's task
    vector: drawn in DARE_BLOCK blocks, each from a generator seeded by (seed, tensor name,
    input, block), so it does not depend on the chunking."""
    out = torch.empty(count, dtype=torch.bool)
    first, last = start // DARE_BLOCK, (start + count - 1) // DARE_BLOCK
    for b in range(first, last + 1):
        g = torch.Generator().manual_seed(tensor_seed(ctx.seed, f"{ctx.name}#{slot}", b))
        n = min(DARE_BLOCK, ctx.numel - b * DARE_BLOCK)
        u = torch.rand(n, generator=g)
        lo, hi = max(start, b * DARE_BLOCK), min(start + count, b * DARE_BLOCK + n)
        out[lo - start : hi - start] = u[lo - b * DARE_BLOCK : hi - b * DARE_BLOCK] < density
    return out


class _InputStats:
    """One input's statistics: its kept set (magnitude methods) and its rescale factor."""

    def __init__(self, keep_top: TopSet | None, drop_top: TopSet | None, scale: float) -> None:
        self.keep_top, self.drop_top, self.scale = keep_top, drop_top, scale


class TaskArithmeticFamily(Method):
    """Base of the task-vector methods; subclasses pick the sparsification and the election."""

    base = "required"
    sparsify: ClassVar[Sparsify] = "none"
    elect: ClassVar[bool] = False
    Shared = GTAShared
    PerInput = TaskInput
    grid_per_input = ("weight", "density")

    def _active(self, p: Params) -> list[int]:
        """Input slots (1..N) whose task vector is sparsified (density < 1)."""
        if self.sparsify == "none":
            return []
        return [i + 1 for i, q in enumerate(p.per_input[1:]) if q.density < 1.0]  # type: ignore[union-attr]

    def stats_key(self, p: Params) -> Hashable | None:
        act = self._active(p)
        if not act:
            return None
        extra = tuple(getattr(p.per_input[i], "gamma", None) for i in act)
        dens = tuple(p.per_input[i].density for i in act)  # type: ignore[union-attr]
        return (tuple(act), dens, extra, p.shared.rescale)  # type: ignore[attr-defined]

    def identity(self, p: Params, slots: int) -> int | None:
        lam = p.shared.lambda_  # type: ignore[attr-defined]
        ws = [q.weight for q in p.per_input[1:]]  # type: ignore[union-attr]
        if lam == 0.0 or slots == 1 or all(w == 0.0 for w in ws):
            return 0
        return None

    def stats(self, read: Reader, ctx: ChunkCtx, p: Params, slots: int) -> Any:
        """Per sparsified input: the magnitude sets over the whole tensor (one float32 buffer
        of the tensor, reused across inputs) and the L1 rescale factor."""
        out: dict[int, _InputStats] = {}
        n = ctx.numel
        buf = (
            torch.empty(n, dtype=torch.float32)
            if self.sparsify in ("magnitude", "outliers")
            else None
        )
        for i in self._active(p):
            q = p.per_input[i]
            keep_top = drop_top = None
            l1 = 0.0
            if buf is not None:
                for s, b in stream_pass(read, 0, n):
                    d = read(i, s, b.numel()).sub_(b)
                    buf[s : s + d.numel()] = d.abs_()
                if p.shared.rescale:  # type: ignore[attr-defined]
                    l1 = float(buf.sum(dtype=torch.float64))
                if self.sparsify == "magnitude":
                    keep_top = top_set(buf, max(1, int(q.density * n)))  # type: ignore[union-attr]
                else:
                    target = int(q.density * n)  # type: ignore[union-attr]
                    n_top = int(q.gamma * n)  # type: ignore[union-attr]
                    n_bot = max(0, n - target - n_top)
                    drop_top = top_set(buf, n - n_bot - target)
                    keep_top = top_set(buf, n - n_bot)
            scale = 1.0
            if p.shared.rescale:  # type: ignore[attr-defined]
                kept = 0.0
                # fresh copies: the chunk loop below walks the tensor in its own pieces
                kt, dt = (
                    replace(t, _eq_before={0: 0}) if t else None for t in (keep_top, drop_top)
                )
                for s, b in stream_pass(read, 0, n):
                    d = read(i, s, b.numel()).sub_(b)
                    if buf is None:
                        l1 += float(d.abs().sum(dtype=torch.float64))
                    m = self._mask(i, d, s, ctx, q, kt, dt)
                    kept += float(d.abs_().mul_(m).sum(dtype=torch.float64))
                if l1 >= 1e-7 and kept >= 1e-7:
                    scale = l1 / kept
            out[i] = _InputStats(keep_top, drop_top, scale)
        return out

    def _mask(
        self,
        slot: int,
        d: torch.Tensor,
        start: int,
        ctx: ChunkCtx,
        q: Any,
        keep_top: TopSet | None,
        drop_top: TopSet | None,
    ) -> torch.Tensor:
        if self.sparsify == "random":
            return dare_keep(ctx, slot, start, d.numel(), q.density)
        a = d.abs()
        assert keep_top is not None
        keep = keep_top.mask(a, start)
        if drop_top is not None:
            keep &= ~drop_top.mask(a, start)
        return keep

    def compute(self, xs, p, stats, ctx):  # type: ignore[override]
        base = xs[0]
        shared = p.shared
        deltas, weights = [], []
        for i in range(1, len(xs)):
            q = p.per_input[i]
            d = xs[i].sub_(base)
            if stats and i in stats:
                st = stats[i]
                d.mul_(self._mask(i, d, ctx.start, ctx, q, st.keep_top, st.drop_top))
                if st.scale != 1.0:
                    d.mul_(st.scale)
            deltas.append(d.mul_(q.weight))  # type: ignore[union-attr]
            weights.append(q.weight)  # type: ignore[union-attr]
        if self.elect:
            total = deltas[0].clone()
            for d in deltas[1:]:
                total.add_(d)
            majority = torch.where(total >= 0, 1.0, -1.0).to(base.dtype)
            mixed = torch.zeros_like(base)
            divisor = torch.zeros_like(base)
            for d, w in zip(deltas, weights, strict=True):
                vote = torch.sign(d) == majority
                mixed.add_(d * vote)
                divisor.add_(vote.to(base.dtype), alpha=w)
            divisor[divisor == 0] = 1.0
        else:
            mixed = deltas[0]
            for d in deltas[1:]:
                mixed.add_(d)
            w = sum(weights)
            divisor = torch.tensor(1.0 if abs(w) < 1e-8 else w, dtype=base.dtype)
        if shared.normalize:  # type: ignore[attr-defined]
            mixed.div_(divisor)
        if shared.lambda_ != 1.0:  # type: ignore[attr-defined]
            mixed.mul_(shared.lambda_)  # type: ignore[attr-defined]
        return mixed.add_(base)


class TaskArithmetic(TaskArithmeticFamily):
    """theta = theta_base + lambda * sum_i w_i (theta_i - theta_base)  (/ sum_i w_i when
    `normalize`); a negative weight subtracts a task; lambda 0 gives the base bit for bit."""

    name = "task_arithmetic"


class Ties(TaskArithmeticFamily):
    """TIES (Yadav et al.): each task vector trimmed to its top-`density` magnitudes, signs
    elected by the weighted sum, the agreeing entries averaged (normalize), times lambda."""

    name = "ties"
    sparsify = "magnitude"
    elect = True
    Shared = TiesShared


class DareLinear(TaskArithmeticFamily):
    """DARE (Yu et al.) + task arithmetic: each task-vector entry kept with probability
    `density` (seeded: `seed`, the tensor name and the input fix the draw), rescaled to keep
    the task vector's L1 norm (`rescale`, as mergekit 0.1.5; in expectation 1/density)."""

    name = "dare_linear"
    sparsify = "random"
    Shared = DareShared


class DareTies(DareLinear):
    """DARE's random drop and rescale, then TIES' sign election and disjoint mean."""

    name = "dare_ties"
    elect = True


class Breadcrumbs(TaskArithmeticFamily):
    """Model Breadcrumbs (Davari & Belilovsky): per task vector the top `gamma` fraction by
    magnitude (outliers) and the smallest are dropped, `density` of the entries kept."""

    name = "breadcrumbs"
    sparsify = "outliers"
    PerInput = BreadcrumbsInput
    grid_per_input = ("weight", "density", "gamma")


class BreadcrumbsTies(Breadcrumbs):
    """Breadcrumbs' sparsification with TIES' sign election."""

    name = "breadcrumbs_ties"
    elect = True
