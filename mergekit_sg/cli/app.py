"""The `sgmerge` typer app: each command is a small module; errors are one line, status 2."""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import traceback
import warnings

import click
import typer
from typer.core import TyperCommand, TyperGroup

from mergekit_sg.cli import early
from mergekit_sg.cli.common import err_console
from mergekit_sg.errors import SgMergeError, Terminated
from mergekit_sg.version import TOOLKIT

try:  # typer >= 0.2x vendors its own click; catch both kinds of its exceptions
    from typer._click import exceptions as _vendored
except ImportError:  # pragma: no cover
    _vendored = click.exceptions

_EXIT = (click.exceptions.Exit, typer.Exit)
_CLICK = (click.ClickException, _vendored.ClickException)
_ABORT = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)
_NO_ARGS = tuple(
    c
    for c in (
        getattr(click.exceptions, "NoArgsIsHelpError", None),
        getattr(_vendored, "NoArgsIsHelpError", None),
    )
    if c is not None
)

# command -> (module, function), in help order; a command's module is imported only when that
# command runs (or for the command list), so `sgmerge interpolate` does not import the others
# (the import-graph test reads the module names of this literal table as edges)
COMMANDS = {
    "interpolate": ("mergekit_sg.cli.interpolate", "interpolate_cmd"),
    "merge": ("mergekit_sg.cli.merge", "merge_cmd"),
    "soup": ("mergekit_sg.cli.soup", "soup_cmd"),
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

# command -> its line in `sgmerge --help` (the full text is the command's own --help); written
# here so that the command list needs none of the modules above (torch is 1.5-3 s to import)
SUMMARIES = {
    "interpolate": "WiSE-FT: (1 - alpha) * pretrained + alpha * fine-tuned.",
    "merge": "Merge by a mergekit config (ties, dare, slerp, ...), grids too.",
    "soup": "Model soup: the uniform mean, or greedy on a held-out score.",
    "inspect": "Describe a checkpoint without reading its tensor data.",
    "diff": "Compare two checkpoints: relative change per group.",
    "scan": "Speciality and generality along alpha; pick the best.",
    "lmc": "Loss along linear paths between models; the barrier.",
    "demo": "Fine-tune MiniLM, scan alpha, keep the best (minutes).",
    "push": "Upload a folder to the Hub in one commit.",
    "run": "Run a command from a YAML recipe file.",
    "finetune": "Fine-tune, optionally with a forgetting mitigation.",
    "fisher": "Estimate a model's diagonal Fisher on data.",
    "coop": "Learn a CoOp prompt for a frozen CLIP.",
    "mergetune": "Continue a fine-tune with low-loss paths to both ends.",
}


class LazyGroup(TyperGroup):
    """The root command: lists every command from COMMANDS and SUMMARIES without importing
    one, so `sgmerge`, `sgmerge --help` and `sgmerge --version` answer at once; main() adds
    the command that runs (its module imported then)."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # type: ignore[override]
        return list(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # type: ignore[override]
        with formatter.section("Commands"):
            formatter.write_dl(list(SUMMARIES.items()))


_TYPE_WORDS = {"str": "TEXT", "int": "INT", "float": "FLOAT", "path": "PATH", "bool": "BOOLEAN"}


def _metavar(label: str) -> str:
    """typer's `<type>` placeholder as a plain CLI metavar: `<str>` -> TEXT, `<path>` -> PATH,
    `<list[str]>` -> TEXT (the option repeats), a choice `<a|b>` -> `[a|b]`."""
    inner = re.fullmatch(r"list\[(.*)\]", label)
    if inner:
        label = inner.group(1)
    if "|" in label:
        return f"[{label}]"
    return _TYPE_WORDS.get(label, label.upper())


class PlainHelpCommand(TyperCommand):
    """A command whose help reads like a plain CLI's: `Usage: sgmerge X [OPTIONS] A B` (an
    optional argument in brackets, a variadic one as `A...`), arguments without type
    placeholders, options with TEXT/INT/FLOAT/PATH metavars and choices as `[a|b]`."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:  # type: ignore[override]
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name != "argument":
                continue
            name = p.metavar or (p.name or "").upper()
            if p.nargs != 1:
                name += "..."
            pieces.append(name if p.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # type: ignore[override]
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for p in self.get_params(ctx):
            record = p.get_help_record(ctx)
            if record is None:
                continue
            name, help_ = record
            if p.param_type_name == "argument":
                args.append((re.sub(r"\s*<[^<>]*>", "", name), help_))
            else:
                opts.append((re.sub(r"<([^<>]*)>", lambda m: _metavar(m.group(1)), name), help_))
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def build_app(only: str | None = None) -> typer.Typer:
    """The typer app with every command, or with `only` that one, or with none for the root's
    help and options (`only=""`): a command's module is imported only when it is added."""
    app = typer.Typer(
        cls=LazyGroup,
        name="sgmerge",
        help="Give back the generality a fine-tuned model lost: WiSE-FT merges and their evidence.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain click help: wraps at 80 columns, never cuts a name
    )
    for name, (module, fn) in COMMANDS.items():
        if only is None or name == only:
            mod = importlib.import_module(module)
            app.command(name, cls=PlainHelpCommand, short_help=SUMMARIES[name])(getattr(mod, fn))
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


def _one_line(text: str) -> None:
    err_console.print(text, highlight=False, markup=False, emoji=False, soft_wrap=True)


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """`--debug` is accepted anywhere before a `--`: taken out of the arguments here."""
    cut = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:cut] if a != "--debug"]
    return head + args[cut:], len(head) != cut


def _click_line(e: Exception) -> str:
    """A click usage error (bad choice, unknown flag or command, missing argument) as one line."""
    msg = " ".join(e.format_message().replace("Value error, ", "").split())  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None and ctx.command_path else "sgmerge"
    return f"sgmerge: error: {msg} (see {where} --help)"


class _Signals:
    """While a command runs: SIGTERM raises Terminated (so temporary folders are removed as
    on Ctrl-C) and SIGINT raises KeyboardInterrupt; the previous handlers come back after."""

    def __init__(self) -> None:
        self.saved: dict[int, object] = {}
        self.interrupted = False

    def _term(self, signum: int, frame: object) -> None:
        raise Terminated(signum)

    def _int(self, signum: int, frame: object) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def __enter__(self) -> _Signals:
        for sig, fn in ((signal.SIGTERM, self._term), (signal.SIGINT, self._int)):
            try:
                self.saved[sig] = signal.signal(sig, fn)
            except ValueError:  # not the main thread: leave the handlers alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs a command; user errors print one line and return status 2, SIGINT
    returns 130 and SIGTERM 143, each with one line."""
    args, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    early.start(args)  # the sources' hashes, while the command's modules are imported
    if "--ensemble" in args:  # scan --ensemble [probs|logits]
        from mergekit_sg.cli.scan import bare_ensemble

        args = bare_ensemble(args)
    warnings.showwarning = _warn  # type: ignore[assignment]
    first = next((a for a in args if not a.startswith("-")), None)
    try:
        with _Signals() as sigs:
            cmd = typer.main.get_command(build_app(first if first in COMMANDS else ""))
            rc = cmd.main(args=args, prog_name="sgmerge", standalone_mode=False)
    except _EXIT as e:
        return e.exit_code
    except _NO_ARGS as e:  # `sgmerge` or a group alone: the help, as before
        e.show()
        return 2
    except _CLICK as e:
        if debug:
            traceback.print_exc()
        _one_line(_click_line(e))
        return 2
    except _ABORT:
        _one_line("sgmerge: interrupted")
        return 130
    except Terminated as e:
        _one_line("sgmerge: terminated")
        return 128 + e.signum
    except SgMergeError as e:
        if debug:
            traceback.print_exc()
        _one_line(f"sgmerge: error: {e}")
        return 2
    except RecursionError:
        if debug:
            traceback.print_exc()
        _one_line("sgmerge: error: an input is nested too deeply to read (JSON or YAML)")
        return 2
    except OSError as e:  # disk full, permission denied, a file gone: what and where
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        _one_line(f"sgmerge: error: {where}{e.strerror or e}")
        return 2
    if isinstance(rc, int) and not isinstance(rc, bool):  # typer turns Ctrl-C into 130
        if rc == 130 and sigs.interrupted:
            _one_line("sgmerge: interrupted")
        return rc
    return 0


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
