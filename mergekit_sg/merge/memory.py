"""Merges in memory, for scans: a method's output as a state dict, and the two endpoints of a
coefficient path.

For task arithmetic and its kin (ties, dare_*, breadcrumbs*) the merged task vector
delta = theta(lambda) - theta_base does not depend on lambda:

    theta(lambda) = theta_base + lambda * delta

so `lambda_endpoints` computes theta_base and theta_base + delta once, and a `LinearPath`
between them puts a live model at any lambda at the cost of a WiSE-FT scan point (alpha =
lambda). Other coefficients (density, t, weights) change the merge itself: `merged_state_dict`
recomputes it per point."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.merge.merge import (
    MergeSpec,
    _open_inputs,
    as_spec,
    build_merge_plan,
    check_inputs,
)
from mergekit_sg.merge.methods import ChunkCtx, get_method
from mergekit_sg.merge.methods.task_arithmetic import TaskArithmeticFamily

LAMBDA = "lambda"


def merged_state_dict(
    config: str | Path | Mapping[str, Any] | MergeSpec,
    point: Mapping[str, float] | None = None,
    names: Sequence[str] | None = None,
    out_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The merge of `config` (with the grid `point` applied) as a state dict: every floating
    tensor (or those in `names`) computed whole, by the same method code as the streaming
    merge; in the output dtype (or `out_dtype`, e.g. float32 for an unrounded endpoint)."""
    return _in_memory(config, point, names, out_dtype, with_base=False)[0]


def _in_memory(
    config: str | Path | Mapping[str, Any] | MergeSpec,
    point: Mapping[str, float] | None,
    names: Sequence[str] | None,
    out_dtype: torch.dtype | None,
    with_base: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`merged_state_dict`, and with `with_base` also the state the same config gives at
    lambda = 0 (the base model's tensors where merged, the copied tensors as they are), from
    the same single read of the inputs."""
    spec = as_spec(config)
    method = get_method(spec.merge_method)
    refs, entries = check_inputs(spec, method)
    with contextlib.ExitStack() as stack:
        cks = _open_inputs(refs, stack)
        plan = build_merge_plan(spec, cks, entries, method, [dict(point or {})])
        want = set(names) if names is not None else None
        out: dict[str, torch.Tensor] = {}
        base: dict[str, torch.Tensor] = {}
        cd = plan.compute_dtype
        for e in plan.entries:
            if want is not None and e.name not in want:
                continue
            whole = [cks[i].read(n).reshape(-1).to(cd, copy=True) for i, n in e.slots]  # type: ignore[misc]
            dtype = out_dtype or e.out_dtype
            if e.params is None:
                out[e.name] = whole[e.copy_slot].reshape(e.shape).to(e.out_dtype)
                if with_base:
                    base[e.name] = out[e.name]
                continue
            if with_base:  # lambda 0 is the base slot exactly (TaskArithmeticFamily.identity)
                base[e.name] = whole[0].reshape(e.shape).to(dtype, copy=True)
            p = e.params[0]
            ident = method.identity(p, len(e.slots))
            if ident is not None:
                out[e.name] = whole[ident].reshape(e.shape).to(dtype)
                continue
            ctx = ChunkCtx(e.name, e.numel, 0, plan.seed)

            def read(k: int, start: int, count: int, whole=whole) -> torch.Tensor:
                return whole[k][start : start + count].clone()

            stats = method.stats(read, ctx, p, len(e.slots)) if method.stats_key(p) else None
            res = method.compute([w.clone() for w in whole], p, stats, ctx)
            out[e.name] = res.reshape(e.shape).to(dtype)
        for alias, kept in plan.aliases.items():
            if kept in out:
                out[alias] = out[kept]
            if kept in base:
                base[alias] = base[kept]
        return out, base


def lambda_endpoints(
    config: str | Path | Mapping[str, Any] | MergeSpec,
    point: Mapping[str, float] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(theta_base, theta_base + delta) in float32 for a task-vector method: the endpoints of
    the lambda path (alpha = lambda; see the module doc). `point` may set the other
    parameters (density, weights), not lambda."""
    spec = as_spec(config)
    method = get_method(spec.merge_method)
    if not isinstance(method, TaskArithmeticFamily):
        raise SgMergeError(
            f"{spec.merge_method}: a lambda path needs a task-vector method "
            "(task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties)"
        )
    if point and LAMBDA in point:
        raise SgMergeError("the lambda path sets lambda itself: leave it out of the point")
    params = {**spec.parameters, LAMBDA: 1.0}
    one = spec.model_copy(update={"parameters": params})
    merged, base = _in_memory(one, point, names, torch.float32, with_base=True)
    return base, merged
