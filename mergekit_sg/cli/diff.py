"""`sgmerge diff A B`: keys on one side only, mismatches, per-group relative L2 distance."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Literal

import typer
from rich.table import Table

from mergekit_sg.cli.common import console
from mergekit_sg.merge.inspect import DiffReport, diff_checkpoints


def diff_cmd(
    a: Annotated[str, typer.Argument(help="First checkpoint (e.g. pretrained).")],
    b: Annotated[str, typer.Argument(help="Second checkpoint (e.g. fine-tuned).")],
    group_by: Annotated[
        Literal["layer", "module", "tensor"],
        typer.Option(
            "--group-by",
            help="Group distances by layer (up to the first index), module, or tensor.",
        ),
    ] = "layer",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Compare two checkpoints: ||B - A|| / ||A|| per group, and any key or shape mismatch."""
    rep = diff_checkpoints(a, b, group_by)
    if as_json:
        console.print_json(json.dumps(dataclasses.asdict(rep), default=str))
        return
    print_diff(rep)


def print_diff(rep: DiffReport) -> None:
    for label, keys in ((f"only in {rep.a}", rep.only_a), (f"only in {rep.b}", rep.only_b)):
        if keys:
            console.print(f"[yellow]{len(keys)} key(s) {label}[/]: " + ", ".join(keys[:10]))
    for name, sa, sb in rep.shape_mismatch:
        console.print(f"[red]shape mismatch[/] {name}: {list(sa)} vs {list(sb)}")
    for name, da, db in rep.dtype_mismatch:
        console.print(f"[yellow]dtype differs[/] {name}: {da} vs {db}")
    t = Table("group", "tensors", "params", "||B-A||/||A||", "||B-A||")
    for g in rep.groups:
        t.add_row(g.group, str(g.tensors), f"{g.numel:,}", f"{g.rel_l2:.4g}", f"{g.l2:.4g}")
    console.print(t)
    console.print(f"overall ||B-A||/||A|| = {rep.total_rel_l2:.4g}")
