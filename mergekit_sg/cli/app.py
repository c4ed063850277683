"""The `sgmerge` typer app: each command is a small module; errors are one line, status 2."""

from __future__ import annotations

import sys
import traceback
import warnings

import click
import typer

from mergekit_sg.cli.common import err_console
from mergekit_sg.cli.coop import coop_cmd
from mergekit_sg.cli.demo import demo_cmd
from mergekit_sg.cli.diff import diff_cmd
from mergekit_sg.cli.finetune import finetune_cmd
from mergekit_sg.cli.fisher import fisher_cmd
from mergekit_sg.cli.inspect import inspect_cmd
from mergekit_sg.cli.interpolate import interpolate_cmd
from mergekit_sg.cli.mergetune import mergetune_cmd
from mergekit_sg.cli.push import push_cmd
from mergekit_sg.cli.run import run_cmd
from mergekit_sg.cli.scan import lmc_cmd, scan_cmd
from mergekit_sg.errors import SgMergeError
from mergekit_sg.version import TOOLKIT

try:  # typer >= 0.2x vendors its own click; catch both kinds of its exceptions
    from typer._click import exceptions as _vendored
except ImportError:  # pragma: no cover
    _vendored = click.exceptions

_EXIT = (click.exceptions.Exit, typer.Exit)
_CLICK = (click.ClickException, _vendored.ClickException)
_ABORT = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)

app = typer.Typer(
    name="sgmerge",
    help="Give back the generality a fine-tuned model lost: WiSE-FT merges and their evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("interpolate")(interpolate_cmd)
app.command("inspect")(inspect_cmd)
app.command("diff")(diff_cmd)
app.command("scan")(scan_cmd)
app.command("lmc")(lmc_cmd)
app.command("demo")(demo_cmd)
app.command("push")(push_cmd)
app.command("run")(run_cmd)
app.command("finetune")(finetune_cmd)
app.command("fisher")(fisher_cmd)
app.command("coop")(coop_cmd)
app.command("mergetune")(mergetune_cmd)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(TOOLKIT)
        raise typer.Exit()


@app.callback()
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
    cmd = typer.main.get_command(app)
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
    sys.exit(main())
