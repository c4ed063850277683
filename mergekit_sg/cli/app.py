"""The `sgmerge` typer app: each command is a small module; errors are one line, status 2."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings

import click
import typer

from mergekit_sg.cli.common import err_console
from mergekit_sg.errors import SgMergeError
from mergekit_sg.version import TOOLKIT

try:  # typer >= 0.2x vendors its own click; catch both kinds of its exceptions
    from typer._click import exceptions as _vendored
except ImportError:  # pragma: no cover
    _vendored = click.exceptions

_EXIT = (click.exceptions.Exit, typer.Exit)
_CLICK = (click.ClickException, _vendored.ClickException)
_ABORT = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)

# command -> (module, function), in help order; a command's module is imported only when that
# command runs (or for the command list), so `sgmerge interpolate` does not import the others
# (the import-graph test reads the module names of this literal table as edges)
COMMANDS = {
    "interpolate": ("mergekit_sg.cli.interpolate", "interpolate_cmd"),
    "inspect": ("mergekit_sg.cli.inspect", "inspect_cmd"),
    "diff": ("mergekit_sg.cli.diff", "diff_cmd"),
    "scan": ("mergekit_sg.cli.scan", "scan_cmd"),
    "lmc": ("mergekit_sg.cli.scan", "lmc_cmd"),
    "demo": ("mergekit_sg.cli.demo", "demo_cmd"),
    "push": ("mergekit_sg.cli.push", "push_cmd"),
    "run": ("mergekit_sg.cli.run", "run_cmd"),
    "finetune": ("mergekit_sg.cli.finetune", "finetune_cmd"),
    "fisher": ("mergekit_sg.cli.fisher", "fisher_cmd"),
    "coop": ("mergekit_sg.cli.coop", "coop_cmd"),
    "mergetune": ("mergekit_sg.cli.mergetune", "mergetune_cmd"),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The typer app with every command, or with `only` that one (a faster start)."""
    app = typer.Typer(
        name="sgmerge",
        help="Give back the generality a fine-tuned model lost: WiSE-FT merges and their evidence.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, (module, fn) in COMMANDS.items():
        if only is None or name == only:
            mod = importlib.import_module(module)
            app.command(name)(getattr(mod, fn))
    app.callback()(_root)
    return app


def _print_version(value: bool) -> None:
    if value:
        typer.echo(TOOLKIT)
        raise typer.Exit()


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Options for every command (--debug may also come after the command)."""


def _warn(message: object, *args: object, **kwargs: object) -> None:
    err_console.print(f"sgmerge: warning: {message}", highlight=False, markup=False, emoji=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs a command; user errors print one line and return status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    warnings.showwarning = _warn  # type: ignore[assignment]
    first = next((a for a in args if not a.startswith("-")), None)
    cmd = typer.main.get_command(build_app(first if first in COMMANDS else None))
    try:
        cmd.main(args=args, prog_name="sgmerge", standalone_mode=False)
        return 0
    except _EXIT as e:
        return e.exit_code
    except _CLICK as e:
        e.show()
        return 2
    except _ABORT:
        err_console.print("sgmerge: interrupted", highlight=False)
        return 130
    except SgMergeError as e:
        if debug:
            traceback.print_exc()
        err_console.print(
            f"sgmerge: error: {e}", highlight=False, markup=False, emoji=False, soft_wrap=True
        )
        return 2


def run() -> None:
    """The console script: after the command has finished (outputs renamed into place,
    worker threads joined), flush and leave without the interpreter's teardown of torch's
    modules (0.3-1 s measured here), which has nothing left to save."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
