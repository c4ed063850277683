"""Recipe commands of the prompt and MERGETUNE tools: `coop`, `mergetune` and
`prompt-benchmark` (CoOp then MERGETUNE over datasets and seeds: the base-to-novel protocol and
ImageNet domain generalisation). Their options are the commands' own pydantic models."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.recipe import RecipeContext, RecipeResult, register_recipe_command
from mergekit_sg.tune import (
    CoopOptions,
    MergetuneOptions,
    PromptBenchmarkOptions,
    PromptResult,
    coop,
    mergetune,
    run_benchmark,
)


def _coop_recipe(
    inputs: dict[str, str], out: Path | None, options: CoopOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = coop(out, options)
    lines = [f"prompt -> {res.out} ({res.steps} steps)"]
    if res.test:
        lines.append("test: " + ", ".join(f"{k} {v:.4f}" for k, v in res.test.items()))
    return RecipeResult(outputs=[res.out] + ([res.init] if res.init else []), lines=lines)


def _mergetune_recipe(
    inputs: dict[str, str], out: Path | None, options: MergetuneOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = mergetune(out, options)
    lines = [f"continued -> {res.out} ({res.steps} steps)"]
    if isinstance(res, PromptResult) and res.test:
        lines.append("test: " + ", ".join(f"{k} {v:.4f}" for k, v in res.test.items()))
    return RecipeResult(outputs=[res.out], lines=lines)


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


register_recipe_command(
    "coop", CoopOptions, _coop_recipe, help="Learn a CoOp prompt for a frozen CLIP."
)
register_recipe_command(
    "mergetune",
    MergetuneOptions,
    _mergetune_recipe,
    help="MERGETUNE continued fine-tuning of a prompt, a head or a parameter subset.",
)
register_recipe_command(
    "prompt-benchmark",
    PromptBenchmarkOptions,
    _benchmark_recipe,
    help="CoOp then MERGETUNE on every dataset and seed, scored against zero-shot CLIP.",
)
