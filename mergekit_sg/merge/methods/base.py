"""The method protocol: a merge method is a pure function over aligned chunks of its inputs
(float tensors of one name, flattened, the same element range of each), with its parameters
validated by pydantic models, plus an optional per-tensor statistics step run before the
chunks (a magnitude threshold, norms, cosines) that may read the whole tensor through a
reader. The streaming executor owns all I/O; a method never opens a file."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

# read(slot, start, count) -> elements [start, start+count) of the slot's flat tensor, in the
# compute dtype (a fresh tensor the caller may change).
Reader = Callable[[int, int, int], torch.Tensor]
STATS_CHUNK = 1 << 18  # 1 MB of float32: smaller pieces stay in cache (2x faster than 1 << 22)
COMPUTE_BLOCK = 1 << 18  # 1 MB of float32 per temporary


class NoParams(BaseModel):
    """A method or input without parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Params:
    """A method's parameters for one tensor and one output: the shared ones and one model per
    input slot (None for a slot that takes no parameters, e.g. the base of task arithmetic)."""

    shared: BaseModel
    per_input: tuple[BaseModel | None, ...]

    def record(self) -> dict[str, Any]:
        return {
            **self.shared.model_dump(),
            "inputs": [p.model_dump() if p is not None else None for p in self.per_input],
        }


@dataclass(frozen=True)
class ChunkCtx:
    """Where a chunk lies: the tensor's name and length, and the chunk's first element."""

    name: str
    numel: int
    start: int
    seed: int = 0


class Method:
    """Base class of the merge methods. Subclasses set the class attributes and `compute`."""

    name: ClassVar[str]
    # "required": slot 0 is the base and slots 1.. the other models; "none": every model is an
    # input (a base_model listed in `models` is an input like the others).
    base: ClassVar[Literal["required", "none"]] = "none"
    min_models: ClassVar[int] = 1  # non-base models
    max_models: ClassVar[int | None] = None
    Shared: ClassVar[type[BaseModel]] = NoParams
    PerInput: ClassVar[type[BaseModel]] = NoParams
    # per-input parameters that a grid (`--param NAME=V1,V2`) may set for every input
    grid_per_input: ClassVar[tuple[str, ...]] = ()

    def stats_key(self, p: Params) -> Hashable | None:
        """What the statistics depend on (None: the method has no statistics step)."""
        return None

    def stats(self, read: Reader, ctx: ChunkCtx, p: Params, slots: int) -> Any:
        """Whole-tensor statistics, computed once per tensor and key before its chunks."""
        return None

    def identity(self, p: Params, slots: int) -> int | None:
        """The slot whose values this output is exactly (an endpoint), or None."""
        return None

    def compute(self, xs: list[torch.Tensor], p: Params, stats: Any, ctx: ChunkCtx) -> torch.Tensor:
        """The merged chunk in the compute dtype, from the inputs' chunks in the compute dtype."""
        raise NotImplementedError

    def compute_into(
        self,
        out: torch.Tensor,
        xs: list[torch.Tensor | None],
        p: Params,
        stats: Any,
        ctx: ChunkCtx,
        compute_dtype: torch.dtype,
    ) -> None:
        """Write the merged chunk into `out` (the output dtype) from the raw input chunks, in
        blocks of COMPUTE_BLOCK elements so the float32 temporaries stay small and in cache;
        methods with a faster kernel (lerp) override this."""
        n = out.numel()
        for s in range(0, n, COMPUTE_BLOCK):
            e = min(n, s + COMPUTE_BLOCK)
            conv = [x[s:e].to(compute_dtype, copy=True) if x is not None else None for x in xs]
            sub = replace(ctx, start=ctx.start + s)
            out[s:e].copy_(self.compute(conv, p, stats, sub))  # type: ignore[arg-type]

    def compute_many(
        self,
        outs: list[torch.Tensor],
        xs: list[torch.Tensor | None],
        ps: list[Params],
        stats: list[Any],
        ctx: ChunkCtx,
        compute_dtype: torch.dtype,
    ) -> dict[int, bool] | None:
        """Several outputs of one chunk (a grid): `outs[j]` from `ps[j]` and `stats[j]`. One
        `compute_into` each unless a method shares work between them (task arithmetic's
        lambda grid). Returns, where the computation looked at every input element anyway
        (a fused kernel), whether each slot's chunk holds NaN or inf; None where it did not
        (the executor then checks the chunks itself)."""
        for out, p, st in zip(outs, ps, stats, strict=True):
            self.compute_into(out, xs, p, st, ctx, compute_dtype)
        return None

    def checks_finite(self, compute_dtype: torch.dtype) -> bool:
        """Whether `compute_many` on the CPU will likely report non-finite inputs (see
        there), so the reader need not check them first; where it then does not, the
        executor checks."""
        return False


def stream_pass(read: Reader, slot: int, numel: int) -> Any:
    """(start, chunk) pairs of one slot's tensor in STATS_CHUNK pieces."""
    for s in range(0, numel, STATS_CHUNK):
        yield s, read(slot, s, min(STATS_CHUNK, numel - s))
