"""`sgmerge merge CONFIG -o OUT`: a mergekit config, streamed to sharded safetensors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console, record_recipe
from mergekit_sg.cli.flags import with_options
from mergekit_sg.commands.merge import MergeOptions, merge_command, summary_lines
from mergekit_sg.io.progress import make_progress


@with_options(MergeOptions)
def merge_cmd(
    config: Annotated[
        Path,
        typer.Argument(metavar="CONFIG", help="A mergekit YAML config (merge_method, models)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: MergeOptions,
) -> None:
    """Merge by a mergekit config (linear, task_arithmetic, ties, dare_*, slerp, model_stock,
    breadcrumbs, fisher); --param NAME=V1,V2 writes OUT/NAME-V for each value in one pass."""
    t0 = time.perf_counter()
    res = merge_command(config, out, options, progress=make_progress(quiet))
    record_recipe("merge", out, options, extra={"config": str(config)})
    if quiet:
        return
    for line in summary_lines(res, time.perf_counter() - t0):
        console.print(line)
