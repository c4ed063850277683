"""Shared CLI state: the consoles, and the command line as typed (recorded in outputs)."""

from __future__ import annotations

import shlex
import sys

from rich.console import Console

# Off a terminal (logs, CI, pipes) rich would squeeze tables to 80 columns: give them room.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def command_line() -> str:
    return "sgmerge " + " ".join(shlex.quote(a) for a in sys.argv[1:])
