"""`soup`: the uniform or greedy model soup of fine-tuned candidates, written by the streaming
executor with a card that lists what went in and why; its summary lines and recipe command."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.path.soup import SoupOptions, SoupReport, soup

__all__ = ["RECIPE", "SoupOptions", "SoupRecipeOptions", "SoupReport", "soup", "summary_lines"]


def summary_lines(rep: SoupReport, seconds: float) -> list[str]:
    """What `sgmerge soup` prints: each candidate's score and whether it went in, the soup."""
    lines = []
    if rep.soup is not None:
        for st in rep.soup.steps:
            mark = "[green]kept[/]" if st.added else "[dim]left out[/]"
            lines.append(
                f"{rep.candidates[st.candidate]}: alone {rep.soup.individual[st.candidate]:.6g}, "
                f"soup with it {st.score:.6g} -> {mark}"
            )
        lines.append(f"soup score {rep.soup.score:.6g}")
    kind = "greedy" if rep.greedy else "uniform"
    lines.append(
        f"{kind} soup of {len(rep.kept)} of {len(rep.candidates)} candidates -> "
        f"[bold]{rep.merged.out}[/] in {seconds:.1f} s"
    )
    return lines


class SoupRecipeOptions(SoupOptions):
    """The `soup` recipe command: SoupOptions plus the candidates (checkpoint references)."""

    candidates: list[str] = Field(
        min_length=1, description="The fine-tuned checkpoints to make the soup of."
    )


def _soup_recipe(
    inputs: dict[str, str], out: Path | None, options: SoupRecipeOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    opts = SoupOptions(**{k: getattr(options, k) for k in SoupOptions.model_fields})
    rep = soup(list(options.candidates), out, opts, progress=ctx.progress)
    done = f"soup of {len(rep.kept)} of {len(rep.candidates)} candidates -> {rep.merged.out}"
    return RecipeResult(outputs=[rep.merged.out], lines=[*summary_lines(rep, 0.0)[:-1], done])


RECIPE = recipe_command(
    "soup",
    SoupRecipeOptions,
    _soup_recipe,
    help="Uniform or greedy (options.greedy, options.eval) model soup of options.candidates.",
)
