"""The training progress bar: steps, ETA and the current loss terms, on a terminal only (quiet
in logs and CI). It steps aside while the evaluators draw their own bars."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


class TrainBar:
    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._p: Any = None
        self._task: Any = None
        self._total = 0
        self._done = 0

    def start(self, total: int, done: int = 0) -> None:
        self._total, self._done = total, done
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
        if self._p is None:
            return
        shown = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
        self._p.update(self._task, advance=1, description=f"epoch {epoch}/{epochs}", terms=shown)

    def pause(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def resume(self) -> None:
        if self.enabled and self._p is None:
            self._open()

    def stop(self) -> None:
        self.pause()
