"""`sgmerge coop --model open_clip:ARCH --pretrained W --data DIR -o OUT`: learn a CoOp prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console
from mergekit_sg.cli.options import with_options
from mergekit_sg.tune import COOP_LOG_FILE as LOG_FILE
from mergekit_sg.tune import CoopOptions, PromptResult, coop


def print_prompt_result(res: PromptResult, what: str) -> None:
    """Test accuracy (base, novel, harmonic mean when split) and where things went."""
    if res.test:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in res.test.items())
        console.print(f"test accuracy: {shown}")
    if res.init is not None:
        console.print(f"initial prompt -> [bold]{res.init}[/]")
    best = f", best epoch {res.best_epoch}" if res.best_epoch else ""
    console.print(
        f"{what} -> [bold]{res.out}[/] ({res.steps} steps in {res.seconds:.0f} s{best}; "
        f"log: {res.out / LOG_FILE})"
    )


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
    res = coop(out, options, quiet=quiet)
    if not quiet:
        print_prompt_result(res, "prompt")
