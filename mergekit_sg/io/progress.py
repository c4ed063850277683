"""Progress reporting: a rich bar (tensors, bytes/s, ETA) on a terminal, silence elsewhere."""

from __future__ import annotations

import sys
import threading
from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total_tensors: int, total_bytes: int) -> None: ...
    def advance(self, tensors: int, nbytes: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, label: str, total_tensors: int, total_bytes: int) -> None:
        pass

    def advance(self, tensors: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class RichProgress:
    """Two rows: tensors done, and bytes written with rate and ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as _P

        self._lock = threading.Lock()
        self._p = _P(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )

    def start(self, label: str, total_tensors: int, total_bytes: int) -> None:
        self._p.start()
        self._tensors = self._p.add_task(f"{label} tensors", total=total_tensors)
        self._bytes = self._p.add_task(f"{label} bytes", total=total_bytes)

    def advance(self, tensors: int, nbytes: int) -> None:
        with self._lock:
            if tensors:
                self._p.advance(self._tensors, tensors)
            self._p.advance(self._bytes, nbytes)

    def finish(self) -> None:
        self._p.stop()


def make_progress(quiet: bool = False) -> Progress:
    """A rich bar only when stderr is a terminal and the user did not ask for quiet."""
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return RichProgress()
