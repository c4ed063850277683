"""The one error type users can act on: the CLI prints it as one line and exits with status 2."""

from __future__ import annotations


class SgMergeError(Exception):
    """An error the user can fix: bad path, key or shape mismatch, malformed file, bad option."""


def first_few(items: list[str], n: int = 3) -> str:
    """Name the first `n` items and how many more, for one-line error messages."""
    shown = ", ".join(repr(i) for i in items[:n])
    more = len(items) - n
    return f"{shown} (and {more} more)" if more > 0 else shown


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that everything unwinds (temporary folders are
    removed) like on Ctrl-C; the CLI exits with 128 + the signal number (143)."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(signum)
        self.signum = signum
