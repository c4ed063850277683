"""`sgmerge run RECIPE.yaml`: run a command from a recipe file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mergekit_sg.cli.common import command_line, console
from mergekit_sg.io.progress import make_progress

if TYPE_CHECKING:
    from mergekit_sg.commands.recipe import Recipe


def print_plan(recipe: Recipe) -> None:
    """What a run would do: the command, its inputs, destination and the options it sets."""
    from mergekit_sg.commands.run import plan_rows

    t = Table("", "", title=f"would run: {recipe.command.name}", show_header=False)
    for key, value in plan_rows(recipe):
        t.add_row(key, value)
    console.print(t)


def run_cmd(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="The recipe file (YAML).")],
    force: Annotated[bool, typer.Option("--force", help="Replace existing outputs.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would run; run nothing.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on Ray: auto (the running cluster), local (start one here) or ADDRESS; "
            "a file listing several runs spreads them, a prompt-benchmark its jobs.",
        ),
    ] = None,
) -> None:
    """Run a command from a YAML recipe file (command, inputs, out, options).

    The options are validated by the same model as the command's flags; every output records
    the recipe (sgmerge_recipe.yaml next to it, and in its model card)."""
    # the work (torch) is imported where it runs: --help stays light
    from mergekit_sg.commands.run import (
        check_destination_free,
        check_inputs_match,
        check_recipe,
        load_recipes,
        run_recipe,
        run_recipes,
        with_force,
    )

    recs = load_recipes(recipe)
    if dry_run:
        for rec in recs:
            rec = with_force(rec) if force else rec
            check_recipe(rec)
            print_plan(rec)
            check_destination_free(rec)
            check_inputs_match(rec)
        console.print("dry run: nothing written")
        return
    if len(recs) == 1 and ray is None:
        res = run_recipe(
            recs[0], force=force, progress=make_progress(quiet), command_line=command_line()
        )
        results = [res]
    else:
        results = run_recipes(recs, force=force, ray=ray, quiet=quiet, command_line=command_line())
    if not quiet:
        for res in results:
            for line in res.lines:
                console.print(line, soft_wrap=True, highlight=False)
