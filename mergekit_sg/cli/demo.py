"""`sgmerge demo`: the whole tool on real weights and real data, with nothing to download."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console
from mergekit_sg.commands.demo import DemoSettings, demo_summary, fresh_dir, run_demo


def demo_cmd(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo writes.")] = Path(
        "demo-out"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Fine-tune real all-MiniLM-L6-v2 on Rotten Tomatoes from a zero-shot head, scan alpha for
    speciality vs generality, write the best alpha's model, report the loss barrier (a few
    minutes on two CPU cores)."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.scan import scan_table

    settings = DemoSettings()
    work = fresh_dir(workdir)
    t0 = time.perf_counter()
    console.rule("[bold]1. sgmerge finetune: MiniLM + zero-shot head on Rotten Tomatoes")
    console.print(settings.describe())
    res = run_demo(work, settings, quiet=quiet)
    console.rule("[bold]2. sgmerge scan: the linear path zero-shot (alpha=0) -> fine-tuned (1)")
    console.print(scan_table(res.scan))
    sel = res.scan.selection
    if sel is not None:
        console.print(f"selected alpha = [bold]{sel.alpha:g}[/] ({sel.reason})")
    console.rule("[bold]3. what happened")
    for line in demo_summary(res):
        console.print(line, highlight=False)
    console.rule("[bold]4. outputs")
    console.print(f"zero-shot model   {res.zeroshot}")
    console.print(f"fine-tuned model  {res.finetuned}")
    if res.scan.best is not None:
        console.print(f"best-alpha model  {res.scan.best.out}  (safetensors + card with the scan)")
    console.print(
        f"scan              {work / 'scan'}  (results.jsonl, CSV, metrics.png, tradeoff.png)"
    )
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
