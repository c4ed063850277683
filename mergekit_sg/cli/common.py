"""Shared CLI state and helpers: the console, the quiet/debug flags, byte formatting."""

from __future__ import annotations

import shlex
import sys

from rich.console import Console

# Off a terminal (logs, CI, pipes) rich would squeeze tables to 80 columns: give them room.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def command_line() -> str:
    return "sgmerge " + " ".join(shlex.quote(a) for a in sys.argv[1:])
