"""Layer 7, commands: one module per command (interpolate, scan, lmc, push, inspect, diff, demo,
finetune, fisher, coop, mergetune, prompt-benchmark, run), each with its options model, its run
function, the lines it prints and its recipe command; `registry` lists the recipe commands and
`run` loads, validates and runs recipes. The CLI and `sgmerge run` both go through here.

The face resolves its names on first use from `_FACE`, a literal table whose module names the
import-graph test reads as edges, so that `sgmerge interpolate` imports the interpolate command
alone and not the training stack behind `finetune`."""

from __future__ import annotations

import importlib
from typing import Any

_FACE = {
    "Recipe": "mergekit_sg.commands.recipe",
    "RecipeCommand": "mergekit_sg.commands.recipe",
    "RecipeContext": "mergekit_sg.commands.recipe",
    "RecipeResult": "mergekit_sg.commands.recipe",
    "recipe_command": "mergekit_sg.commands.recipe",
    "recipe_sidecar": "mergekit_sg.commands.recipe",
    "recipe_variables": "mergekit_sg.commands.recipe",
    "register_recipe_command": "mergekit_sg.commands.recipe",
    "recipe_commands": "mergekit_sg.commands.registry",
    "check_recipe": "mergekit_sg.commands.run",
    "load_recipe": "mergekit_sg.commands.run",
    "parse_recipe": "mergekit_sg.commands.run",
    "run_recipe": "mergekit_sg.commands.run",
    "with_force": "mergekit_sg.commands.run",
    "interpolate_and_push": "mergekit_sg.commands.interpolate",
    "scan_command": "mergekit_sg.commands.scan",
    "lmc_command": "mergekit_sg.commands.lmc",
    "push_lines": "mergekit_sg.commands.push",
    "push_output": "mergekit_sg.commands.push",
    "DemoSettings": "mergekit_sg.commands.demo",
    "PROMPTS": "mergekit_sg.commands.demo",
    "minilm_dir": "mergekit_sg.commands.demo",
    "run_demo": "mergekit_sg.commands.demo",
}

__all__ = sorted(_FACE)


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'mergekit_sg.commands' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
