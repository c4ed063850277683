"""The training progress: on a terminal a bar (steps, ETA, the current loss terms) that steps
aside while the evaluators draw their own; off a terminal (logs, nohup, CI) one line every
tenth of the run and at the end of each epoch, with elapsed time and ETA; nothing when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any


class TrainBar:
    def __init__(self, quiet: bool = False, label: str = "finetune") -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.lines = not quiet and not self.enabled
        self.label = label
        self._t0 = time.perf_counter()
        self._start_done = 0
        self._p: Any = None
        self._task: Any = None
        self._total = 0
        self._done = 0

    def start(self, total: int, done: int = 0) -> None:
        self._total, self._done = total, done
        self._t0, self._start_done = time.perf_counter(), done
        if self.enabled:
            self._open()

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._p.start()
        self._task = self._p.add_task("finetune", total=self._total, completed=self._done, terms="")

    def advance(self, terms: Mapping[str, Any], epoch: int, epochs: int) -> None:
        self._done += 1
        if self.lines:
            self._line(terms, epoch, epochs)
        if self._p is None:
            return
        shown = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
        self._p.update(self._task, advance=1, description=f"epoch {epoch}/{epochs}", terms=shown)

    def _line(self, terms: Mapping[str, Any], epoch: int, epochs: int) -> None:
        """One plain line every tenth of the run (and at the last step)."""
        from mergekit_sg.io.progress import clock, eta

        every = max(1, self._total // 10)
        if self._done % every and self._done != self._total:
            return
        el = time.perf_counter() - self._t0
        shown = " ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        left = eta(el, self._done - self._start_done, self._total - self._start_done)
        print(
            f"{self.label}: epoch {epoch}/{epochs}, step {self._done}/{self._total} | {shown} | "
            f"elapsed {clock(el)} | ETA {left}",
            file=sys.stderr,
            flush=True,
        )

    def pause(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def resume(self) -> None:
        if self.enabled and self._p is None:
            self._open()

    def stop(self) -> None:
        self.pause()
