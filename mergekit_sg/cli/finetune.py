"""`sgmerge finetune --model SPEC --pretrained REF --data DATA -o OUT`: fine-tuning with an
optional forgetting mitigation (L1, L2, EWC, distillation, LoRA merged back on save)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mergekit_sg.cli.common import console
from mergekit_sg.cli.flags import with_options
from mergekit_sg.tune.finetuning.finetune_options import FinetuneOptions


@with_options(FinetuneOptions)
def finetune_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: FinetuneOptions,
) -> None:
    """Fine-tune a pretrained model, optionally with a forgetting mitigation; the output is a
    plain checkpoint that interpolates with the pretrained one (see --save-init)."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.finetune import finetune

    res = finetune(out, options, quiet=quiet)
    if quiet:
        return
    if res.evals:
        metrics = [(n, m) for n, ms in res.evals[0]["metrics"].items() for m in ms]
        table = Table("epoch", *[f"{n}.{m}" for n, m in metrics])
        for rec in res.evals:
            mark = " *" if rec["epoch"] == res.best_epoch else ""
            row = [f"{rec['metrics'][n][m]:.4f}" for n, m in metrics]
            table.add_row(f"{rec['epoch']}{mark}", *row)
        console.print(table)
    if res.init is not None:
        console.print(f"initial model -> [bold]{res.init}[/]")
    console.print(res.summary(), markup=False, highlight=False)
    if res.regression():
        console.print(f"[bold yellow]warning:[/] {res.regression()}", highlight=False)
