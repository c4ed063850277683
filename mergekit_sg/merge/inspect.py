"""What is in a checkpoint (`inspect`) and how two checkpoints differ (`diff`), streamed so that
memory stays flat whatever the model size."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mergekit_sg.io.checkpoint import Checkpoint, open_checkpoint
from mergekit_sg.merge.executor import CHUNK_ELEMS
from mergekit_sg.merge.math import relative_l2
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.merge.rules import parse_alpha_for, rule_for


@dataclass
class TensorRow:
    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    file: str
    rule: str | None = None
    tied_to: str | None = None


@dataclass
class Summary:
    """A checkpoint described without reading its tensor data."""

    ref: str
    format: str
    kind: str
    files: list[tuple[str, int]]
    num_params: int
    nbytes: int
    dtypes: dict[str, int]
    tensors: list[TensorRow]


def inspect_checkpoint(
    ref: str | Path | Checkpoint, rules: InterpolateOptions | None = None
) -> Summary:
    """Keys, shapes, dtypes, counts and files; with `rules`, the merge rule of each tensor."""
    ck = open_checkpoint(ref)
    try:
        alpha_for = parse_alpha_for(rules.alpha_for) if rules else []
        rows = []
        for t in ck.tensors.values():
            rule = None
            if rules is not None:
                r = rule_for(
                    t.name,
                    tuple(rules.alpha),
                    alpha_for,
                    rules.exclude,
                    rules.only,
                    rules.excluded_from,
                )
                if not t.dtype.is_floating_point and r.kind == "lerp":
                    rule = "copy (integer: must be equal in both)"
                else:
                    rule = r.describe()
            file = ck.files[t.file_index].name
            rows.append(
                TensorRow(t.name, t.shape, str(t.dtype).removeprefix("torch."), t.numel, file, rule)
            )
        for alias, kept in ck.aliases.items():
            t = ck.tensors[kept]
            rows.append(
                TensorRow(alias, t.shape, str(t.dtype).removeprefix("torch."), 0, "-", None, kept)
            )
        dtypes = Counter()
        for t in ck.tensors.values():
            dtypes[str(t.dtype).removeprefix("torch.")] += t.numel
        return Summary(
            ck.ref,
            ck.format,
            ck.kind,
            [(str(f.relative_to(ck.root)), f.stat().st_size) for f in ck.files],
            ck.num_params,
            ck.nbytes,
            dict(dtypes),
            rows,
        )
    finally:
        ck.close()


_LAYER = re.compile(r"^(.*?\.\d+)(\.|$)")


def group_of(name: str, group_by: str) -> str:
    """The group a tensor belongs to: 'layer' (up to the first index), 'module', or 'tensor'."""
    if group_by == "tensor":
        return name
    if group_by == "module":
        return name.rpartition(".")[0] or name
    m = _LAYER.match(name)
    return m.group(1) if m else name.split(".")[0]


@dataclass
class GroupDistance:
    group: str
    tensors: int
    numel: int
    rel_l2: float  # ||B - A|| / ||A||
    l2: float  # ||B - A||


@dataclass
class DiffReport:
    a: str
    b: str
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dtype_mismatch: list[tuple[str, str, str]] = field(default_factory=list)
    groups: list[GroupDistance] = field(default_factory=list)
    total_rel_l2: float = 0.0


def diff_checkpoints(
    a: str | Path | Checkpoint, b: str | Path | Checkpoint, group_by: str = "layer"
) -> DiffReport:
    """Keys on one side only, shape/dtype mismatches, and per-group relative L2 distance."""
    ca, cb = open_checkpoint(a), open_checkpoint(b)
    try:
        rep = DiffReport(ca.ref, cb.ref)
        rep.only_a = sorted(set(ca.tensors) - set(cb.tensors))
        rep.only_b = sorted(set(cb.tensors) - set(ca.tensors))
        sums: dict[str, list[float]] = {}
        tot_d = tot_a = 0.0
        for name, ta in ca.tensors.items():
            tb = cb.tensors.get(name)
            if tb is None:
                continue
            if ta.shape != tb.shape:
                rep.shape_mismatch.append((name, ta.shape, tb.shape))
                continue
            if ta.dtype != tb.dtype:
                rep.dtype_mismatch.append((name, str(ta.dtype), str(tb.dtype)))
            if not (ta.dtype.is_floating_point and tb.dtype.is_floating_point):
                continue
            d2 = a2 = 0.0
            for s in range(0, ta.numel, CHUNK_ELEMS):
                n = min(CHUNK_ELEMS, ta.numel - s)
                dd, aa = relative_l2(ca.read_flat(name, s, n), cb.read_flat(name, s, n))
                d2, a2 = d2 + dd, a2 + aa
            g = sums.setdefault(group_of(name, group_by), [0, 0, 0.0, 0.0])
            g[0] += 1
            g[1] += ta.numel
            g[2] += d2
            g[3] += a2
            tot_d, tot_a = tot_d + d2, tot_a + a2
        rep.groups = [
            GroupDistance(k, int(v[0]), int(v[1]), _ratio(v[2], v[3]), math.sqrt(v[2]))
            for k, v in sums.items()
        ]
        rep.total_rel_l2 = _ratio(tot_d, tot_a)
        return rep
    finally:
        ca.close()
        cb.close()


def _ratio(d2: float, a2: float) -> float:
    if a2 == 0.0:
        return 0.0 if d2 == 0.0 else math.inf
    return math.sqrt(d2 / a2)


__all__ = ["DiffReport", "Summary", "diff_checkpoints", "group_of", "inspect_checkpoint"]
