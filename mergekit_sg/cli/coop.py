"""`sgmerge coop --model open_clip:ARCH --pretrained W --data DIR -o OUT`: learn a CoOp prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console, record_recipe
from mergekit_sg.cli.flags import with_options
from mergekit_sg.tune.prompt.prompt_options import CoopOptions


@with_options(CoopOptions)
def coop_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: CoopOptions,
) -> None:
    """Learn a CoOp prompt (context vectors before each class name) for a frozen CLIP."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.coop import coop, prompt_lines

    res = coop(out, options, quiet=quiet)
    record_recipe("coop", out, options)
    if not quiet:
        for line in prompt_lines(res, "prompt"):
            console.print(line)
