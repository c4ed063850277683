"""`sgmerge interpolate PRETRAINED FINETUNED -o OUT`: WiSE-FT to sharded safetensors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mergekit_sg.cli.common import command_line, console, human_bytes
from mergekit_sg.cli.options import with_options
from mergekit_sg.cli.push import print_push
from mergekit_sg.io.dtypes import itemsize
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.progress import make_progress
from mergekit_sg.workflows import interpolate_and_push


@with_options(InterpolateOptions)
def interpolate_cmd(
    pretrained: Annotated[
        str, typer.Argument(help="Pretrained (zero-shot) checkpoint: dir, file or Hub id.")
    ],
    finetuned: Annotated[str, typer.Argument(help="Fine-tuned checkpoint: dir, file or Hub id.")],
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
    n = len(res.plan.entries)
    nbytes = sum(e.numel * itemsize(e.out_dtype) for e in res.plan.entries)
    copied = sum(1 for e in res.plan.entries if e.rule.kind == "copy")
    for alpha, path in res.outputs.items():
        console.print(f"alpha={alpha:g} -> [bold]{path}[/]")
    console.print(
        f"{n} tensors ({copied} copied), {human_bytes(nbytes)} per output, "
        f"{len(res.outputs)} output(s) in {time.perf_counter() - t0:.1f} s"
    )
    if push is not None:
        print_push(push)
