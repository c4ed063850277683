"""`coop`: learn a CoOp prompt (context vectors before each class name) for a frozen CLIP; its
summary lines (shared with `mergetune` in prompt mode) and its recipe command."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.tune import COOP_LOG_FILE, CoopOptions, PromptResult, coop

__all__ = ["RECIPE", "CoopOptions", "PromptResult", "coop", "prompt_lines", "test_line"]


def test_line(res: PromptResult) -> str | None:
    """Test accuracy (base, novel, harmonic mean when split), or None without a test set."""
    if not res.test:
        return None
    return ", ".join(f"{k} {v:.4f}" for k, v in res.test.items())


def prompt_lines(res: PromptResult, what: str) -> list[str]:
    """What `sgmerge coop` prints: test accuracy, the initial prompt and where the run went."""
    lines = []
    if (shown := test_line(res)) is not None:
        lines.append(f"test accuracy: {shown}")
    if res.init is not None:
        lines.append(f"initial prompt -> [bold]{res.init}[/]")
    best = f", best epoch {res.best_epoch}" if res.best_epoch else ""
    lines.append(
        f"{what} -> [bold]{res.out}[/] ({res.steps} steps in {res.seconds:.0f} s{best}; "
        f"log: {res.out / COOP_LOG_FILE})"
    )
    return lines


def _coop_recipe(
    inputs: dict[str, str], out: Path | None, options: CoopOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    res = coop(out, options)
    lines = [f"prompt -> {res.out} ({res.steps} steps)"]
    if (shown := test_line(res)) is not None:
        lines.append("test: " + shown)
    return RecipeResult(outputs=[res.out] + ([res.init] if res.init else []), lines=lines)


RECIPE = recipe_command(
    "coop", CoopOptions, _coop_recipe, help="Learn a CoOp prompt for a frozen CLIP."
)
