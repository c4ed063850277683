"""`sgmerge inspect CHECKPOINT`: keys, shapes, dtypes, parameter count, format, shards."""

from __future__ import annotations

from typing import Annotated

import typer

from mergekit_sg.cli.common import console
from mergekit_sg.cli.flags import with_options
from mergekit_sg.merge.options import InterpolateOptions

# only the options that decide which merge rule a tensor gets (--groups)
RULE_OPTIONS = ("alpha", "alpha_for", "exclude", "only", "excluded_from", "fisher", "strict")


@with_options(InterpolateOptions, only=RULE_OPTIONS)
def inspect_cmd(
    checkpoint: Annotated[
        str, typer.Argument(metavar="CHECKPOINT", help="Checkpoint: dir, file or Hub id.")
    ],
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
    # imported here, not above: --help needs only the options (no torch)
    from mergekit_sg.commands.inspect import inspect_checkpoint, summary_json, summary_view

    s = inspect_checkpoint(checkpoint, options if groups else None)
    if as_json:
        console.print_json(summary_json(s))
        return
    for part in summary_view(s, groups, limit):
        console.print(part)
