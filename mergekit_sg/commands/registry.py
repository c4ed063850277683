"""Every command a recipe can name, in one static table (the import graph sees each edge),
plus the ones code registered with `register_recipe_command`."""

from __future__ import annotations

from mergekit_sg.commands import (
    coop,
    finetune,
    fisher,
    interpolate,
    lmc,
    merge,
    mergetune,
    prompt_benchmark,
    push,
    scan,
    soup,
)
from mergekit_sg.commands.recipe import RecipeCommand, plugin_commands

BUILTIN: dict[str, RecipeCommand] = {
    c.name: c
    for c in (
        interpolate.RECIPE,
        merge.RECIPE,
        soup.RECIPE,
        scan.RECIPE,
        lmc.RECIPE,
        lmc.MERGETUNE_RECIPE,
        push.RECIPE,
        finetune.RECIPE,
        fisher.RECIPE,
        coop.RECIPE,
        mergetune.RECIPE,
        prompt_benchmark.RECIPE,
    )
}


def recipe_commands() -> dict[str, RecipeCommand]:
    """The built-in commands, then any registered ones (a registered name replaces a built-in)."""
    return {**BUILTIN, **plugin_commands()}
