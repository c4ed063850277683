"""`sgmerge scan` and `sgmerge lmc`: walk the linear path in memory and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console, record_recipe
from mergekit_sg.cli.flags import with_options
from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.progress import make_progress
from mergekit_sg.path.options import LmcOptions, ScanOptions

MIXES = ("probs", "logits")


def bare_ensemble(args: list[str]) -> list[str]:
    """`--ensemble` given without a value means `--ensemble probs` (the flag takes an optional
    value, which click options cannot)."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--ensemble" and (i + 1 == len(args) or args[i + 1] not in MIXES):
            out.append("probs")
    return out


@with_options(ScanOptions)
def scan_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results and plots.")],
    pretrained: Annotated[
        str | None,
        typer.Argument(
            metavar="PRETRAINED", help="Pretrained (zero-shot) checkpoint (not with --config)."
        ),
    ] = None,
    finetuned: Annotated[
        str | None,
        typer.Argument(metavar="FINETUNED", help="Fine-tuned checkpoint (not with --config)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    options: ScanOptions,
) -> None:
    """Evaluate speciality and generality at every alpha, pick the best, plot the trade-off;
    with --config CFG --param NAME=VALUES, along a merge method's coefficient instead."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.scan import scan_command, scan_config_command, scan_table

    if options.config:
        if pretrained or finetuned:
            raise SgMergeError(
                "scan --config takes no PRETRAINED FINETUNED (the config names them)"
            )
        report = scan_config_command(options.config, out, options, make_progress(quiet))
    elif pretrained is None or finetuned is None:
        raise SgMergeError("scan: give PRETRAINED FINETUNED, or --config CFG --param NAME=VALUES")
    else:
        report = scan_command(pretrained, finetuned, out, options, make_progress(quiet))
        record_recipe("scan", out, options, {"pretrained": pretrained, "finetuned": finetuned})
    console.print(scan_table(report))
    what = "alpha" if not options.config else "".join(options.param).partition("=")[0]
    if report.selection:
        console.print(
            f"selected {what} = [bold]{report.selection.alpha:g}[/] ({report.selection.reason})"
        )
    elif report.note:
        console.print(f"[yellow]no alpha selected[/]: {report.note}")
    if report.best:
        console.print(f"wrote the selected model to [bold]{report.best.out}[/]")
    console.print(f"results, CSV and plots in {out}/")


@with_options(LmcOptions)
def lmc_cmd(
    checkpoints: Annotated[
        list[str],
        typer.Argument(
            metavar="CHECKPOINTS", help="A B, or ZERO_SHOT CONTINUED FINETUNED (both paths)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results and plots.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    options: LmcOptions,
) -> None:
    """Loss along the linear path(s) and the barrier height, max of L(alpha) above the chord."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.lmc import lmc_command, lmc_table

    report = lmc_command(checkpoints, out, options, make_progress(quiet))
    if len(checkpoints) in (2, 3):  # the lmc recipe (a, b) or lmc-mergetune (three models)
        names = ("a", "b") if len(checkpoints) == 2 else ("zero_shot", "continued", "finetuned")
        command = "lmc" if len(checkpoints) == 2 else "lmc-mergetune"
        record_recipe(command, out, options, dict(zip(names, checkpoints, strict=True)))
    console.print(lmc_table(report))
    for b in report.barriers:
        console.print(b.sentence(), highlight=False)
    console.print(f"results, CSV and plot in {out}/")
