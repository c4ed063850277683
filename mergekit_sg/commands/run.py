"""Load, validate and run a YAML recipe (see commands/recipe.py for the format): the command
is looked up in the static registry, its options validated by its own model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mergekit_sg.commands.recipe import (
    RECIPE_KEYS,
    Recipe,
    RecipeCommand,
    RecipeContext,
    RecipeResult,
    expand_vars,
    recipe_sidecar,
    unknown_key,
)
from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals import parse_eval
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.card import RECIPE_FILE
from mergekit_sg.io.progress import Progress
from mergekit_sg.io.reference import HF_URI, HUB_ID, PKG_PREFIX, resolve


def parse_recipe(
    data: Any, source: Path | None = None, environ: Mapping[str, str] | None = None
) -> Recipe:
    """Validate a parsed recipe; every error is one line naming the file and the key."""
    src = f"{source}: " if source else "recipe: "
    if not isinstance(data, dict):
        raise SgMergeError(f"{src}a recipe is a mapping with keys {', '.join(RECIPE_KEYS)}")
    for key in data:
        if key not in RECIPE_KEYS:
            raise unknown_key(src, key, RECIPE_KEYS)
    data = expand_vars(data, os.environ if environ is None else environ, src)
    # every command's module, imported when a recipe is read (not for `sgmerge run --help`)
    from mergekit_sg.commands.registry import recipe_commands

    commands = recipe_commands()
    name = data.get("command")
    if name not in commands:
        what = "missing" if name is None else f"{name!r} is not a recipe command"
        raise SgMergeError(f"{src}command: {what}; one of {', '.join(sorted(commands))}")
    cmd = commands[name]
    inputs = _inputs(cmd, data.get("inputs"), src)
    out = data.get("out")
    if cmd.needs_out and not isinstance(out, str):
        raise SgMergeError(f"{src}out: the destination directory is missing (out: DIR)")
    if not cmd.needs_out and out is not None:
        raise SgMergeError(f"{src}out: {name} writes no output folder; remove `out`")
    options = _options(cmd, data.get("options") or {}, src)
    desc = data.get("description")
    return Recipe(cmd, inputs, Path(out).expanduser() if out else None, options, desc, source)


def _inputs(cmd: RecipeCommand, given: Any, src: str) -> dict[str, str]:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SgMergeError(f"{src}inputs: a mapping of {', '.join(cmd.inputs)} to checkpoints")
    for key in given:
        if key not in cmd.inputs:
            raise unknown_key(f"{src}inputs.", key, cmd.inputs)
    for key in cmd.inputs:
        value = given.get(key)
        if not isinstance(value, str) or not value.strip():
            what = (
                "a Hub repo id (org/name)"
                if key in cmd.targets
                else "a checkpoint reference (path, Hub id or pkg:NAME)"
            )
            raise SgMergeError(f"{src}inputs.{key}: missing; {what}")
    return {k: given[k] for k in cmd.inputs}


def _options(cmd: RecipeCommand, given: Any, src: str) -> BaseModel:
    if not isinstance(given, dict):
        raise SgMergeError(f"{src}options: a mapping of option names to values")
    allowed = tuple(cmd.options_model.model_fields)
    for key in given:
        if key not in allowed:
            raise unknown_key(f"{src}options.", key, allowed)
    try:
        return cmd.options_model(**given)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SgMergeError(f"{src}options.{loc}: {err['msg']}") from None


PACKAGED = Path(__file__).resolve().parents[1] / "recipes"


def packaged_recipe(path: str | Path) -> Path:
    """`path` itself when it exists or names a folder; else NAME[.yaml] among the packaged
    recipes when there is one."""
    p = Path(path)
    if p.exists() or len(p.parts) != 1:
        return p
    for cand in (PACKAGED / p.name, PACKAGED / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    return p


def load_recipe(path: str | Path, environ: Mapping[str, str] | None = None) -> Recipe:
    """Read and validate a recipe file; a bare NAME (no such file) is one of the recipes
    installed with the package (`sgmerge run minilm-demo`)."""
    path = packaged_recipe(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SgMergeError(f"{path}: cannot read the recipe ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SgMergeError(f"{path}: not valid YAML ({where}{problem})") from None
    return parse_recipe(data, path, environ)


def with_force(recipe: Recipe) -> Recipe:
    """The recipe with its destination replaced if it exists (`sgmerge run --force`)."""
    if "force" not in recipe.command.options_model.model_fields:
        raise SgMergeError(f"--force: {recipe.command.name} has no force option")
    opts = recipe.options.model_copy(update={"force": True})
    return Recipe(
        recipe.command, recipe.inputs, recipe.out, opts, recipe.description, recipe.source
    )


def run_recipe(
    recipe: Recipe | str | Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    command_line: str | None = None,
) -> RecipeResult:
    """Run a recipe; each output folder gets the recipe as sgmerge_recipe.yaml (the command
    writes it inside its atomic output; any output without one gets it afterwards), and each
    single-file output gets it beside it as FILE.sgmerge_recipe.yaml."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    text = recipe.to_yaml()
    if force:
        recipe = with_force(recipe)
    ctx = RecipeContext(recipe, text, command_line or f"sgmerge run {recipe.source}", progress)
    result = recipe.command.runner(recipe.inputs, recipe.out, recipe.options, ctx)
    for out in result.outputs:
        if out.is_dir():  # the recipe that ran made every output (it replaces the plain
            (out / RECIPE_FILE).write_text(text)  # one a scan's --write-best merge writes)
        elif out.is_file():
            recipe_sidecar(out).write_text(text)
    return result


def check_recipe(recipe: Recipe) -> None:
    """What `--dry-run` checks beyond the recipe's keys and option types: each evaluator
    string is parsed and its options validated by its kind's model (no data or model loaded)."""
    src = f"{recipe.source}: " if recipe.source else "recipe: "
    for text in getattr(recipe.options, "eval", None) or []:
        try:
            parse_eval(text)
        except SgMergeError as e:
            raise SgMergeError(f"{src}options.eval: {e}") from None


def check_destination_free(recipe: Recipe) -> None:
    """A dry run refuses what the run would refuse: an existing destination without force."""
    if recipe.out is not None:
        check_destination(recipe.out, bool(getattr(recipe.options, "force", False)))


def _where(ref: str) -> str:
    """Where an input comes from; local and package inputs are checked, Hub ones not fetched."""
    local = Path(ref).expanduser().exists() or ref.startswith(PKG_PREFIX)
    if not local and (HF_URI.match(ref) or HUB_ID.match(ref)):
        return "Hub (fetched when run)"
    return str(resolve(ref).path)


def plan_rows(recipe: Recipe) -> list[tuple[str, str]]:
    """What a run would do: each input and where it is, the destination, the options set."""
    rows = []
    for name, ref in recipe.inputs.items():
        where = "Hub repo (written when run)" if name in recipe.command.targets else _where(ref)
        rows.append((name, f"{ref}  [dim]{where}[/]"))
    if recipe.out is not None:
        rows.append(("out", str(recipe.out)))
    for key, value in recipe.options.model_dump(exclude_unset=True).items():
        rows.append((f"options.{key}", str(value)))
    return rows
