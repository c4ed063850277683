"""`prompt-benchmark` (recipes only): CoOp then MERGETUNE over datasets and seeds, the
base-to-novel protocol and ImageNet domain generalisation, scored against zero-shot CLIP."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.tune import PromptBenchmarkOptions, run_benchmark

__all__ = ["RECIPE", "PromptBenchmarkOptions", "run_benchmark"]


def _benchmark_recipe(
    inputs: dict[str, str], out: Path | None, options: PromptBenchmarkOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = run_benchmark(out, options)
    lines = []
    for ds, models in res.summary.items():
        for model, metrics in models.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            lines.append(f"{ds} {model}: {shown}")
    return RecipeResult(outputs=[out], lines=lines)


RECIPE = recipe_command(
    "prompt-benchmark",
    PromptBenchmarkOptions,
    _benchmark_recipe,
    help="CoOp then MERGETUNE on every dataset and seed, scored against zero-shot CLIP.",
)
