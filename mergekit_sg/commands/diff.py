"""`diff`: keys on one side only, shape and dtype mismatches, and per-group relative L2
distance ||B - A|| / ||A||; what the CLI prints, as rich renderables."""

from __future__ import annotations

import dataclasses
import json

from rich.console import RenderableType
from rich.table import Table

from mergekit_sg.merge.inspect import DiffReport, diff_checkpoints

__all__ = ["DiffReport", "diff_checkpoints", "diff_json", "diff_view"]


def diff_json(rep: DiffReport) -> str:
    return json.dumps(dataclasses.asdict(rep), default=str)


def diff_view(rep: DiffReport) -> list[RenderableType]:
    """Mismatch lines, the per-group table, and the overall distance."""
    out: list[RenderableType] = []
    for label, keys in ((f"only in {rep.a}", rep.only_a), (f"only in {rep.b}", rep.only_b)):
        if keys:
            out.append(f"[yellow]{len(keys)} key(s) {label}[/]: " + ", ".join(keys[:10]))
    for name, sa, sb in rep.shape_mismatch:
        out.append(f"[red]shape mismatch[/] {name}: {list(sa)} vs {list(sb)}")
    for name, da, db in rep.dtype_mismatch:
        out.append(f"[yellow]dtype differs[/] {name}: {da} vs {db}")
    t = Table("group", "tensors", "params", "||B-A||/||A||", "||B-A||")
    for g in rep.groups:
        t.add_row(g.group, str(g.tensors), f"{g.numel:,}", f"{g.rel_l2:.4g}", f"{g.l2:.4g}")
    out.append(t)
    out.append(f"overall ||B-A||/||A|| = {rep.total_rel_l2:.4g}")
    return out
