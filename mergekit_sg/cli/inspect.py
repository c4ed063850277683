"""`sgmerge inspect CHECKPOINT`: keys, shapes, dtypes, parameter count, format, shards."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.table import Table

from mergekit_sg.cli.common import console, human_bytes, human_count
from mergekit_sg.cli.options import with_options
from mergekit_sg.merge.inspect import Summary, inspect_checkpoint
from mergekit_sg.merge.options import InterpolateOptions


@with_options(InterpolateOptions)
def inspect_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint: dir, file or Hub id.")],
    groups: Annotated[
        bool,
        typer.Option(
            "--groups", help="Show the merge rule each tensor gets under the given options."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Tensors to list (0 = all).")] = 0,
    *,
    options: InterpolateOptions,
) -> None:
    """Describe a checkpoint without reading its tensor data."""
    s = inspect_checkpoint(checkpoint, options if groups else None)
    if as_json:
        console.print_json(json.dumps(dataclasses.asdict(s)))
        return
    print_summary(s, groups, limit)


def print_summary(s: Summary, groups: bool = False, limit: int = 0) -> None:
    head = Table(show_header=False, box=None)
    head.add_row("reference", s.ref)
    head.add_row("format", f"{s.format} ({s.kind})")
    head.add_row("parameters", f"{s.num_params:,} ({human_count(s.num_params)})")
    head.add_row("tensor bytes", human_bytes(s.nbytes))
    head.add_row("dtypes", ", ".join(f"{k}: {human_count(v)}" for k, v in s.dtypes.items()))
    head.add_row("files", "\n".join(f"{f} ({human_bytes(n)})" for f, n in s.files))
    console.print(head)
    t = Table("tensor", "shape", "dtype", "params", "file", *(["rule"] if groups else []))
    rows = s.tensors[:limit] if limit else s.tensors
    for r in rows:
        file = f"tied to {r.tied_to}" if r.tied_to else r.file
        cells = [r.name, "x".join(map(str, r.shape)) or "scalar", r.dtype, f"{r.numel:,}", file]
        t.add_row(*cells, *([r.rule or "tied"] if groups else []))
    console.print(t)
    if limit and len(s.tensors) > limit:
        console.print(f"... {len(s.tensors) - limit} more (use --limit 0)")
