"""`fisher`: the diagonal Fisher of a model on data (for EWC and Fisher-weighted merging) as one
safetensors file; its recipe command. The file is one output, so the recipe goes into its
metadata and beside it as FILE.sgmerge_recipe.yaml."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.finetune import quiet_for
from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.tune import FisherOptions, compute_fisher

__all__ = ["RECIPE", "FisherOptions", "compute_fisher"]


def _fisher_recipe(
    inputs: dict[str, str], out: Path | None, options: FisherOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = compute_fisher(out, options, quiet=quiet_for(ctx), recipe_yaml=ctx.recipe_yaml)
    return RecipeResult(outputs=[res.out], lines=[res.summary()])


RECIPE = recipe_command(
    "fisher",
    FisherOptions,
    _fisher_recipe,
    help="The diagonal Fisher of a model on data, as one safetensors file at `out`.",
)
