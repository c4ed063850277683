"""Progress reporting. On a terminal: one rich bar (what is being done, i of n, elapsed, ETA;
a bytes row with the rate only when there are bytes to count, as in a merge). Off a terminal
(logs, nohup, CI): one line per unit of work (an alpha of a scan) with elapsed time and ETA.
`quiet`: nothing."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def start(self, label: str, total_tensors: int, total_bytes: int) -> None: ...
    def step(self, text: str) -> None: ...
    def advance(self, tensors: int, nbytes: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, label: str, total_tensors: int, total_bytes: int) -> None:
        pass

    def step(self, text: str) -> None:
        pass

    def advance(self, tensors: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


def clock(seconds: float) -> str:
    """12 s, 3m05s, 1h02m: short durations for progress lines."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta(elapsed: float, done: int, total: int) -> str:
    """Remaining time at the mean rate so far; '?' before the first unit is done."""
    if done <= 0 or total <= 0:
        return "?"
    return clock(elapsed * (total - done) / done)


class LogProgress:
    """Plain lines for logs: `label: <step text> | done i/n | elapsed | ETA`, one per `step`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.label, self.total, self.done, self.t0 = "", 0, 0, 0.0

    def start(self, label: str, total_tensors: int, total_bytes: int) -> None:
        self.label, self.total, self.done = label, total_tensors, 0
        self.t0 = time.perf_counter()

    def step(self, text: str) -> None:
        el = time.perf_counter() - self.t0
        line = (
            f"{self.label}: {text} | {self.done}/{self.total} done | elapsed {clock(el)} | "
            f"ETA {eta(el, self.done, self.total)}"
        )
        print(line, file=self.stream or sys.stderr, flush=True)

    def advance(self, tensors: int, nbytes: int) -> None:
        self.done += tensors

    def finish(self) -> None:
        """A closing line for work long enough to have been worth logging (a second or more),
        so a quick command's output, or its one error line, stays alone."""
        el = time.perf_counter() - self.t0
        if self.total and self.done and el >= 1.0:
            print(
                f"{self.label}: {self.done}/{self.total} done in {clock(el)}",
                file=self.stream or sys.stderr,
                flush=True,
            )


class RichProgress:
    """One bar: the current step's text, i of n, elapsed, ETA; plus a bytes row with the
    transfer rate when the work has bytes (a merge), never an empty one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._p = None
        self._bytes = None

    def start(self, label: str, total_tensors: int, total_bytes: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as _P

        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        if total_bytes:
            cols.append(TransferSpeedColumn())
        cols += [TimeElapsedColumn(), TimeRemainingColumn()]
        self._label = label
        self._p = _P(*cols, console=Console(stderr=True), transient=True)
        self._p.start()
        self._main = self._p.add_task(label, total=total_tensors)
        self._bytes = self._p.add_task(f"{label} bytes", total=total_bytes) if total_bytes else None

    def step(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._main, description=f"{self._label}: {text}")

    def advance(self, tensors: int, nbytes: int) -> None:
        if self._p is None:
            return
        with self._lock:
            if tensors:
                self._p.advance(self._main, tensors)
            if self._bytes is not None:
                self._p.advance(self._bytes, nbytes)

    def finish(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


def make_progress(quiet: bool = False) -> Progress:
    """A rich bar on a terminal, plain lines elsewhere, nothing when asked to be quiet."""
    if quiet:
        return NullProgress()
    if not sys.stderr.isatty():
        return LogProgress()
    return RichProgress()
