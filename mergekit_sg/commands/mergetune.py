"""`mergetune`: continued fine-tuning guided by linear mode connectivity (prompt, head or
parameter-subset mode); its summary lines and its recipe command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergekit_sg.commands.coop import prompt_lines, test_line
from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.tune import MERGETUNE_LOG_FILE, MergetuneOptions, PromptResult, mergetune

__all__ = ["RECIPE", "MergetuneOptions", "mergetune", "summary_lines"]


def summary_lines(res: Any) -> list[str]:
    """What `sgmerge mergetune` prints: the prompt summary in prompt mode; otherwise one line per
    evaluated epoch (the best marked) and where the continued weights went."""
    if isinstance(res, PromptResult):
        return prompt_lines(res, "continued prompt")
    lines = []
    for rec in res.evals:
        shown = ", ".join(
            f"{n}.{m} {v:.4f}" for n, ms in rec["metrics"].items() for m, v in ms.items()
        )
        mark = " *" if rec["epoch"] == res.best_epoch else ""
        lines.append(f"epoch {rec['epoch']}{mark}: {shown}")
    lines.append(
        f"continued ({res.mode}: {len(res.trainable)} tensors) -> [bold]{res.out}[/] "
        f"({res.steps} steps in {res.seconds:.0f} s; log: {res.out / MERGETUNE_LOG_FILE})"
    )
    return lines


def _mergetune_recipe(
    inputs: dict[str, str], out: Path | None, options: MergetuneOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = mergetune(out, options)
    lines = [f"continued -> {res.out} ({res.steps} steps)"]
    if isinstance(res, PromptResult) and (shown := test_line(res)) is not None:
        lines.append("test: " + shown)
    return RecipeResult(outputs=[res.out], lines=lines)


RECIPE = recipe_command(
    "mergetune",
    MergetuneOptions,
    _mergetune_recipe,
    help="MERGETUNE continued fine-tuning of a prompt, a head or a parameter subset.",
)
