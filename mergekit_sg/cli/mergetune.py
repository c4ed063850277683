"""`sgmerge mergetune --model SPEC --pretrained W1 --finetuned W2 --data DATA -o OUT`: continued
fine-tuning guided by linear mode connectivity (prompt, head or parameter-subset mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console
from mergekit_sg.cli.coop import print_prompt_result
from mergekit_sg.cli.options import with_options
from mergekit_sg.tune import MERGETUNE_LOG_FILE as LOG_FILE
from mergekit_sg.tune import MergetuneOptions, PromptResult, mergetune


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
    res = mergetune(out, options, quiet=quiet)
    if quiet:
        return
    if isinstance(res, PromptResult):
        print_prompt_result(res, "continued prompt")
        return
    for rec in res.evals:
        shown = ", ".join(
            f"{n}.{m} {v:.4f}" for n, ms in rec["metrics"].items() for m, v in ms.items()
        )
        mark = " *" if rec["epoch"] == res.best_epoch else ""
        console.print(f"epoch {rec['epoch']}{mark}: {shown}")
    console.print(
        f"continued ({res.mode}: {len(res.trainable)} tensors) -> [bold]{res.out}[/] "
        f"({res.steps} steps in {res.seconds:.0f} s; log: {res.out / LOG_FILE})"
    )
