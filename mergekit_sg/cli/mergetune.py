"""`sgmerge mergetune --model SPEC --pretrained W1 --finetuned W2 --data DATA -o OUT`: continued
fine-tuning guided by linear mode connectivity (prompt, head or parameter-subset mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console, record_recipe
from mergekit_sg.cli.flags import with_options
from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions


@with_options(MergetuneOptions)
def mergetune_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: MergetuneOptions,
) -> None:
    """Continue a fine-tuned model so it keeps low-loss linear paths to the zero-shot model and
    to itself (MERGETUNE); check with `sgmerge lmc ZERO_SHOT OUT FINETUNED`."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.mergetune import mergetune, summary_lines

    res = mergetune(out, options, quiet=quiet)
    record_recipe("mergetune", out, options)
    if quiet:
        return
    for line in summary_lines(res):
        console.print(line)
