"""`inspect`: describe a checkpoint without reading its tensor data (keys, shapes, dtypes,
parameter count, format, shards, and with --groups the merge rule each tensor gets); what the
CLI prints, as rich renderables."""

from __future__ import annotations

import dataclasses
import json

from rich.console import RenderableType
from rich.table import Table

from mergekit_sg.commands.format import human_bytes, human_count
from mergekit_sg.merge.inspect import Summary, inspect_checkpoint
from mergekit_sg.merge.options import InterpolateOptions

__all__ = ["InterpolateOptions", "Summary", "inspect_checkpoint", "summary_json", "summary_view"]


def summary_json(s: Summary) -> str:
    return json.dumps(dataclasses.asdict(s))


def summary_view(s: Summary, groups: bool = False, limit: int = 0) -> list[RenderableType]:
    """The head table (reference, format, counts, files), the tensor table, and how many rows
    `limit` left out."""
    head = Table(show_header=False, box=None)
    head.add_row("reference", s.ref)
    head.add_row("format", f"{s.format} ({s.kind})")
    head.add_row("parameters", f"{s.num_params:,} ({human_count(s.num_params)})")
    head.add_row("tensor bytes", human_bytes(s.nbytes))
    head.add_row("dtypes", ", ".join(f"{k}: {human_count(v)}" for k, v in s.dtypes.items()))
    head.add_row("files", "\n".join(f"{f} ({human_bytes(n)})" for f, n in s.files))
    t = Table("tensor", "shape", "dtype", "params", "file", *(["rule"] if groups else []))
    rows = s.tensors[:limit] if limit else s.tensors
    for r in rows:
        file = f"tied to {r.tied_to}" if r.tied_to else r.file
        cells = [r.name, "x".join(map(str, r.shape)) or "scalar", r.dtype, f"{r.numel:,}", file]
        t.add_row(*cells, *([r.rule or "tied"] if groups else []))
    out: list[RenderableType] = [head, t]
    if limit and len(s.tensors) > limit:
        out.append(f"... {len(s.tensors) - limit} more (use --limit 0)")
    return out
