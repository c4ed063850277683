"""`sgmerge fisher --model SPEC --pretrained REF --data DATA -o fisher.safetensors`: the
diagonal Fisher from per-sample gradients, stored with the weights' names and shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import console, record_recipe
from mergekit_sg.cli.flags import with_options
from mergekit_sg.tune.fisher.fisher_options import FisherOptions


@with_options(FisherOptions)
def fisher_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    *,
    options: FisherOptions,
) -> None:
    """Estimate the diagonal Fisher of a model on data (for EWC and Fisher-weighted merging)."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.fisher import compute_fisher

    res = compute_fisher(out, options, quiet=quiet)
    record_recipe("fisher", out, options)
    if not quiet:
        console.print(res.summary(), markup=False, highlight=False)
