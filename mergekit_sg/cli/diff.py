"""`sgmerge diff A B`: keys on one side only, mismatches, per-group relative L2 distance."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from mergekit_sg.cli.common import console


def diff_cmd(
    a: Annotated[str, typer.Argument(metavar="A", help="First checkpoint (e.g. pretrained).")],
    b: Annotated[str, typer.Argument(metavar="B", help="Second checkpoint (e.g. fine-tuned).")],
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
    # imported here, not above: --help needs none of it (no torch)
    from mergekit_sg.commands.diff import diff_checkpoints, diff_json, diff_view

    rep = diff_checkpoints(a, b, group_by)
    if as_json:
        console.print_json(diff_json(rep))
        return
    for part in diff_view(rep):
        console.print(part)
