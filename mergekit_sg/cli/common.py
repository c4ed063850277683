"""Shared CLI state: the consoles, and the command line as typed (recorded in outputs)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

# Off a terminal (logs, CI, pipes) rich would squeeze tables to 80 columns: give them room.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def command_line() -> str:
    return "sgmerge " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def record_recipe(
    command: str,
    out: Path,
    options: Any,
    inputs: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """A plain CLI run's recipe as OUT/sgmerge_recipe.yaml (`sgmerge run` redoes it): the
    command, inputs, output and the options that differ from their defaults (`extra`: options
    the CLI takes as arguments). A single-file output (a Fisher file) gets it beside it as
    FILE.sgmerge_recipe.yaml. A results folder that a later run resumes or extends (scan,
    lmc) gets the later run's recipe."""
    from mergekit_sg.io.card import RECIPE_FILE, recipe_text

    if out.is_dir():
        dest = out / RECIPE_FILE
    elif out.is_file():
        dest = out.with_name(f"{out.name}.{RECIPE_FILE}")  # as commands.recipe_sidecar
    else:
        return
    opts = {**options.model_dump(exclude_defaults=True), **(extra or {})}
    dest.write_text(recipe_text(command, out.absolute(), opts, inputs))
