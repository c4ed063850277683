"""`sgmerge soup FT1 FT2 ... -o OUT`: the uniform or (--greedy) greedy model soup."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console, record_recipe
from mergekit_sg.cli.flags import with_options
from mergekit_sg.io.progress import make_progress
from mergekit_sg.path.options import SoupOptions


@with_options(SoupOptions)
def soup_cmd(
    candidates: Annotated[
        list[str],
        typer.Argument(metavar="CANDIDATES", help="Fine-tuned checkpoints (same shapes)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: SoupOptions,
) -> None:
    """Model soup: the mean of the candidates, or with --greedy (and --model, --eval) only those
    that improve the held-out score, best first; the card says what went in and why."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.soup import soup, summary_lines

    t0 = time.perf_counter()
    rep = soup(candidates, out, options, progress=make_progress(quiet))
    record_recipe("soup", rep.merged.out, options, extra={"candidates": list(candidates)})
    if quiet:
        return
    for line in summary_lines(rep, time.perf_counter() - t0):
        console.print(line)
