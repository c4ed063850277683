"""The CLI's surface stays as it is: every command and each of its flags (names, and whether
the flag takes a value) compared with the snapshot in tests/data/cli_surface.json, which was
written from the CLI before the package was rearranged. Regenerate it only for a deliberate
CLI change: `python tests/test_cli_surface.py > tests/data/cli_surface.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from mergekit_sg.cli.app import build_app

SNAPSHOT = Path(__file__).parent / "data" / "cli_surface.json"


def _param(p: Any) -> dict[str, Any]:
    """A click parameter (typer may vendor its own click, so read it by its attributes)."""
    entry: dict[str, Any] = {"names": sorted(p.opts), "kind": p.param_type_name}
    if p.param_type_name == "option":
        entry["secondary"] = sorted(p.secondary_opts)
        entry["takes_value"] = not p.is_flag and not p.count
        entry["multiple"] = bool(p.multiple)
    else:
        entry["nargs"] = p.nargs
    return entry


def surface() -> dict[str, Any]:
    """The root's options and, per command, its parameters in declaration order."""
    group: Any = typer.main.get_command(build_app())
    ctx = group.make_context("sgmerge", ["--help"], resilient_parsing=True)
    commands = {
        name: [_param(p) for p in group.get_command(ctx, name).params]
        for name in group.list_commands(ctx)
    }
    return {"root": [_param(p) for p in group.params], "commands": commands}


def test_cli_surface_matches_snapshot() -> None:
    want = json.loads(SNAPSHOT.read_text())
    got = surface()
    assert sorted(got["commands"]) == sorted(want["commands"])
    assert got["root"] == want["root"]
    for name, params in want["commands"].items():
        assert got["commands"][name] == params, name


if __name__ == "__main__":
    json.dump(surface(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
