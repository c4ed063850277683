"""The command's start: `sgmerge`, `sgmerge --help` and `sgmerge --version` import no command
module and no torch (they answered in 2-3 s when the command list imported every command; now
~0.15 s), `import mergekit_sg` is as light, and its public names still resolve (lazily) to
the same objects, `mergekit_sg.merge` to the function whatever was imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from mergekit_sg.cli.app import COMMANDS, SUMMARIES, build_app, main

# one fresh interpreter per case: what a module import leaves in sys.modules is the point
PROBE = """
import sys
{body}
heavy = sorted(m for m in ("torch", "numpy", "safetensors", "pydantic") if m in sys.modules)
ours = sorted(m for m in sys.modules if m.startswith(("mergekit_sg.cli.", "mergekit_sg.commands")))
print("HEAVY", heavy, "OURS", [m for m in ours if m not in ("mergekit_sg.cli.app",
      "mergekit_sg.cli.common", "mergekit_sg.cli.early")])
"""


def _run_probe(body: str) -> str:
    """All that the probe printed (its last line: what it loaded)."""
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def _probe(body: str) -> str:
    return _run_probe(body).strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_root_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    line = _probe(f"from mergekit_sg.cli.app import main\nprint(main({argv!r}))")
    assert line == "HEAVY [] OURS []"


HELP_PROBE = """
import contextlib, io, sys
from mergekit_sg.cli.app import COMMANDS, main
for name in COMMANDS:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([name, "--help"])
    usage = ("Usage: sgmerge " + name) in buf.getvalue()
    print("CMD", name, rc, usage, "torch" in sys.modules)
"""


def test_every_command_help_imports_no_torch() -> None:
    """Every command's --help needs its options model only: the work (torch, 1.5-3 s to
    import) is imported where it runs (`sgmerge scan --help` 4.0 s -> 0.5 s measured here).
    One interpreter asks every command in turn, so the first that imports torch is named."""
    out = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("CMD ")]
    assert [r[1] for r in rows] == list(COMMANDS)
    for _, name, rc, usage, torch_loaded in rows:
        assert (rc, usage, torch_loaded) == ("0", "True", "False"), name


def test_import_package_is_light_and_names_resolve() -> None:
    line = _probe("import mergekit_sg as sg\nprint(sg.__version__, sg.SgMergeError)")
    assert line == "HEAVY [] OURS []"
    body = (
        "import importlib\n"
        "ex = importlib.import_module('mergekit_sg.merge.executor')\n"  # a submodule first
        "import mergekit_sg as sg\n"
        "from mergekit_sg.merge.merge import merge\n"
        "from mergekit_sg.merge.interpolate import interpolate\n"
        "assert sg.merge is merge and sg.interpolate is interpolate\n"
        "from mergekit_sg import Checkpoint, InterpolateOptions, lerp, open_checkpoint\n"
        "from mergekit_sg.merge import InterpolateOptions as IO, fisher_lerp, group_of\n"
        "assert IO is InterpolateOptions and callable(fisher_lerp) and callable(group_of)\n"
        "assert set(sg.__all__) <= set(dir(sg))\n"
        "try:\n    sg.nonesuch\nexcept AttributeError as e:\n    assert 'nonesuch' in str(e)\n"
    )
    assert "'torch'" in _probe(body)  # the asserts in the probe held (check=True)


def test_command_list_names_every_command_once_within_80_columns() -> None:
    assert list(SUMMARIES) == list(COMMANDS)
    width = max(map(len, COMMANDS))
    for name, text in SUMMARIES.items():
        assert text.endswith(".") and 2 + width + 2 + len(text) <= 79, name


def test_lazy_and_full_command_lists_agree(capsys: pytest.CaptureFixture[str]) -> None:
    """The root help (no command module imported) lists what the full app lists: the same
    commands, in order, each with its summary as the short help."""
    assert main(["--help"]) == 0
    lazy = capsys.readouterr().out
    group = typer.main.get_command(build_app())
    ctx = group.make_context("sgmerge", ["--help"], resilient_parsing=True)
    full = group.get_help(ctx)
    assert lazy.strip() == full.strip()
    for name, text in SUMMARIES.items():
        cmd = group.get_command(ctx, name)  # type: ignore[attr-defined]
        assert cmd.get_short_help_str(200) == text
    rows = [line.split()[0] for line in lazy.split("Commands:")[1].strip("\n").splitlines()]
    assert rows == list(COMMANDS)


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonesuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sgmerge: error: No such command 'nonesuch'. (see sgmerge --help)"]


LAZY_FACES = [
    "mergekit_sg.io",
    "mergekit_sg.merge",
    "mergekit_sg.merge.methods",
    "mergekit_sg.path",
    "mergekit_sg.tune",
    "mergekit_sg.tune.core",
    "mergekit_sg.tune.finetuning",
    "mergekit_sg.tune.fisher",
    "mergekit_sg.tune.mergetuning",
    "mergekit_sg.tune.prompt",
    "mergekit_sg.tune.tasks",
]


@pytest.mark.parametrize("face", LAZY_FACES)
def test_lazy_faces_give_their_names_after_every_submodule_loaded(face: str) -> None:
    """A lazy face (PEP 562) names what its modules define; importing a submodule binds the
    submodule's own name on the package, so no public name may be a submodule's name (path's
    `lmc`, `scan` and `select` functions once were): with every submodule imported first,
    each name is still the object its table points at, and none is a module; every name in
    `__all__` resolves."""
    import importlib
    import pkgutil
    import types

    pkg = importlib.import_module(face)
    for info in pkgutil.iter_modules(pkg.__path__, face + "."):
        importlib.import_module(info.name)
    table = pkg._LAZY
    assert table
    for name, where in table.items():
        module, _, attr = where.partition(":")
        got = getattr(pkg, name)
        assert not isinstance(got, types.ModuleType), f"{face}.{name} is a module"
        assert got is getattr(importlib.import_module(module), attr or name), name
    for name in pkg.__all__:  # the face's public names all resolve
        assert not isinstance(getattr(pkg, name), types.ModuleType), name
