"""`lmc` and `lmc-mergetune`: losses along the linear path(s), barriers, and the report files;
their summary lines and recipe commands."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.io.progress import Progress
from mergekit_sg.options import build_options
from mergekit_sg.path.report import lmc_table, write_lmc_outputs
from mergekit_sg.path.run import LmcOptions, LmcReport, lmc
from mergekit_sg.path.track import scan_tracker, track_lmc

__all__ = ["MERGETUNE_RECIPE", "RECIPE", "LmcOptions", "LmcReport", "lmc_command", "lmc_table"]


def lmc_command(
    checkpoints: list[str | Path],
    out: str | Path,
    options: LmcOptions | None = None,
    progress: Progress | None = None,
    evaluators: list | None = None,
    **kwargs: object,
) -> LmcReport:
    """`sgmerge lmc`: losses along the path(s), barriers, and the report files."""
    out = Path(out)
    opts = build_options(LmcOptions, options, kwargs)
    inputs = {f"checkpoint{i}": str(c) for i, c in enumerate(checkpoints)}
    with scan_tracker(opts, out, "lmc", inputs) as tracker:
        report = lmc(checkpoints, out, opts, evaluators, progress)
        write_lmc_outputs(report, out)
        track_lmc(tracker, report)
    return report


def _lmc_recipe(
    inputs: dict[str, str], out: Path | None, options: LmcOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    rep = lmc_command(list(inputs.values()), out, options, ctx.progress)
    lines = [b.sentence() for b in rep.barriers]  # the figure and what it means, as the CLI
    return RecipeResult(outputs=[out], lines=lines)


RECIPE = recipe_command(
    "lmc",
    LmcOptions,
    _lmc_recipe,
    inputs=("a", "b"),
    help="Loss along the linear path from a to b and its barrier.",
)
MERGETUNE_RECIPE = recipe_command(
    "lmc-mergetune",
    LmcOptions,
    _lmc_recipe,
    inputs=("zero_shot", "continued", "finetuned"),
    help="Both paths of a continued model and the direct path, with their barriers.",
)
