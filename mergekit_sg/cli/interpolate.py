"""`sgmerge interpolate PRETRAINED FINETUNED -o OUT`: WiSE-FT to sharded safetensors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import command_line, console
from mergekit_sg.cli.flags import with_options
from mergekit_sg.cli.push import print_push
from mergekit_sg.commands.interpolate import InterpolateOptions, interpolate_and_push, summary_lines
from mergekit_sg.io.progress import make_progress


@with_options(InterpolateOptions)
def interpolate_cmd(
    pretrained: Annotated[
        str,
        typer.Argument(
            metavar="PRETRAINED", help="Pretrained (zero-shot) checkpoint: dir, file or Hub id."
        ),
    ],
    finetuned: Annotated[
        str, typer.Argument(metavar="FINETUNED", help="Fine-tuned checkpoint: dir, file or Hub id.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: InterpolateOptions,
) -> None:
    """WiSE-FT: theta = (1 - alpha) * PRETRAINED + alpha * FINETUNED, streamed to safetensors."""
    t0 = time.perf_counter()
    res, push = interpolate_and_push(
        pretrained, finetuned, out, options, progress=make_progress(quiet), command=command_line()
    )
    if quiet:
        return
    for line in summary_lines(res, time.perf_counter() - t0):
        console.print(line)
    if push is not None:
        print_push(push)
