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
from mergekit_sg.executors import make_executor
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.card import RECIPE_FILE
from mergekit_sg.io.progress import Progress
from mergekit_sg.io.reference import HF_URI, HUB_ID, PKG_PREFIX, resolve
from mergekit_sg.jobs import (
    Executor,
    Job,
    Resources,
    job_board,
    resources_for,
    run_jobs,
)


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


def check_inputs_match(recipe: Recipe) -> None:
    """What a dry run of a recipe that pairs two checkpoints (interpolate, scan) checks beyond
    the options: that their keys and shapes pair up as the run would pair them, from the
    headers alone (no tensor is read). Hub inputs are not fetched for this; the plan's
    warnings (a pattern that matches no tensor) are shown as the run would show them."""
    import contextlib
    import warnings

    from mergekit_sg.io.checkpoint import open_checkpoint
    from mergekit_sg.merge.options import InterpolateOptions
    from mergekit_sg.merge.plan import build_plan

    ins = recipe.inputs
    if recipe.command.name not in ("interpolate", "scan") or not {"pretrained", "finetuned"} <= set(
        ins
    ):
        return
    if any(_where(ins[k]).startswith("Hub") for k in ("pretrained", "finetuned")):
        return
    opts = recipe.options if isinstance(recipe.options, InterpolateOptions) else None
    opts = (opts or InterpolateOptions()).model_copy(update={"fisher": []})
    with contextlib.ExitStack() as stack:
        pre = open_checkpoint(ins["pretrained"], side_weights=True)
        stack.callback(pre.close)
        ft = open_checkpoint(ins["finetuned"], side_weights=True)
        stack.callback(ft.close)
        plan = build_plan(pre, ft, opts, [])
    for w in plan.warnings:
        warnings.warn(w, stacklevel=2)


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


# ---- recipe files that list several runs: `runs: [RECIPE, ...]`, one independent job each ----

RUNS_KEYS = ("description", "runs")


def load_recipes(path: str | Path, environ: Mapping[str, str] | None = None) -> list[Recipe]:
    """A recipe file's runs: one recipe, or several under `runs:` (each a full recipe
    mapping: command, inputs, out, options), validated before anything runs."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return [load_recipe(path, environ)]  # the one-recipe reader words the error
    if not (isinstance(data, dict) and "runs" in data):
        return [parse_recipe(data, path, environ)]
    for key in data:
        if key not in RUNS_KEYS:
            raise unknown_key(f"{path}: ", key, RUNS_KEYS)
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise SgMergeError(f"{path}: runs: a non-empty list of recipes")
    recipes = [parse_recipe(r, Path(f"{path} runs[{i}]"), environ) for i, r in enumerate(runs)]
    recipes = [Recipe(r.command, r.inputs, r.out, r.options, r.description, path) for r in recipes]
    outs = [str(r.out) for r in recipes if r.out is not None]
    if len(set(outs)) != len(outs):
        raise SgMergeError(f"{path}: runs: two runs write the same out folder")
    return recipes


def recorded(recipe: Recipe) -> bool:
    """A run is done when its output folder holds this very recipe (written when it ends)."""
    if recipe.out is None:
        return False
    try:
        return (recipe.out / RECIPE_FILE).read_text() == recipe.to_yaml()
    except OSError:
        return False


def _job_resources(recipe: Recipe, executor: Executor) -> Resources:
    device = str(getattr(recipe.options, "device", "cpu"))
    cpus = int(getattr(recipe.options, "ray_cpus", 1))
    return resources_for(device, cpus, executor.name == "ray" and executor.gpus_available())


def run_recipes(
    recipes: list[Recipe],
    *,
    force: bool = False,
    ray: str | None = None,
    quiet: bool = True,
    command_line: str | None = None,
    executor: Executor | None = None,
) -> list[RecipeResult]:
    """Run several recipes as independent jobs (on Ray with `ray`), in order of the file for
    the results; runs already recorded in their output folder are skipped unless `force`.
    A single recipe whose command has a `ray` option gets `ray` itself (its jobs spread)."""
    if len(recipes) == 1 and ray and "ray" in recipes[0].command.options_model.model_fields:
        r = recipes[0]
        opts = r.options.model_copy(update={"ray": ray})
        one = Recipe(r.command, r.inputs, r.out, opts, r.description, r.source)
        return [run_recipe(one, force=force, command_line=command_line)]
    executor = executor or make_executor(ray)
    results: dict[int, RecipeResult] = {}
    jobs = []
    for i, r in enumerate(recipes):
        if not force and recorded(r):
            results[i] = RecipeResult([r.out] if r.out else [], [f"{r.out}: already done"])
            continue
        kwargs = {"recipe": r, "force": force, "command_line": command_line}
        name = f"run {i + 1}: {r.command.name} -> {r.out}"
        jobs.append(Job(name, run_recipe, kwargs, _job_resources(r, executor)))

    def record(job: Job, value: RecipeResult) -> None:
        results[int(job.name.split(":")[0].removeprefix("run ")) - 1] = value

    if jobs:
        run_jobs(executor, jobs, record, job_board(len(jobs), "runs", quiet))
    return [results[i] for i in range(len(recipes))]
