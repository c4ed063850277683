"""`sgmerge demo`: the whole tool on real weights, with nothing to download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mergekit_sg.cli.common import console
from mergekit_sg.cli.diff import print_diff
from mergekit_sg.cli.inspect import print_summary
from mergekit_sg.demo import embedding_path, fresh_dir, minilm_dir, perturbed_copy
from mergekit_sg.merge.inspect import diff_checkpoints, inspect_checkpoint
from mergekit_sg.merge.interpolate import interpolate
from mergekit_sg.progress import make_progress


def demo_cmd(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo writes.")] = Path(
        "demo-out"
    ),
) -> None:
    """WiSE-FT on the real all-MiniLM-L6-v2 and a perturbed copy: inspect, diff, merge, embed."""
    work = fresh_dir(workdir)
    pre = minilm_dir()
    console.rule("[bold]1. the pretrained checkpoint (real all-MiniLM-L6-v2)")
    print_summary(inspect_checkpoint(pre), limit=8)
    console.rule("[bold]2. a stand-in fine-tune: every matrix + 5% of its std in noise")
    ft = perturbed_copy(pre, work / "finetuned")
    print_diff(diff_checkpoints(pre, ft, "layer"))
    console.rule("[bold]3. sgmerge interpolate PRE FT --alpha 0,0.25,0.5,0.75,1 (one pass)")
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    res = interpolate(pre, ft, work / "merged", alpha=alphas, progress=make_progress())
    for a, p in res.outputs.items():
        console.print(f"alpha={a:g} -> {p}")
    console.rule("[bold]4. the merged models load in transformers; embeddings move along the path")
    t = Table("alpha", "cos(emb, pretrained emb)", "cos(emb, fine-tuned emb)")
    for r in embedding_path(pre, ft, res.outputs):
        t.add_row(f"{r.alpha:g}", f"{r.cos_to_pretrained:.4f}", f"{r.cos_to_finetuned:.4f}")
    console.print(t)
    console.print(f"outputs under [bold]{work}[/]")
