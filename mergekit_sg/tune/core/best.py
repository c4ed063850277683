"""Per-epoch evaluation and best-epoch selection: the evaluators run on the live model in eval
mode, and the epoch whose chosen metric is best (highest, or lowest for a loss) is kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.models.adapters import LoadedModel

T = TypeVar("T")
SelectKey = tuple[str, str, bool]  # (evaluator, metric, higher is better)


def select_key(evs: list[Evaluator], select: str | None = None) -> SelectKey | None:
    """What the best epoch maximises: `select` (NAME or NAME.METRIC), else the first
    speciality evaluator's (else the first evaluator's) primary metric; None without
    evaluators."""
    if not evs:
        return None
    metric = ""
    if select:
        name, _, metric = select.partition(".")
        found = next((e for e in evs if e.name == name), None)
        if found is None:
            raise SgMergeError(f"--select {select}: no --eval named {name!r}")
        ev = found
    else:
        ev = next((e for e in evs if e.role == "speciality"), evs[0])
    metric = metric or ev.primary
    return ev.name, metric, metric not in ev.lower_is_better


def evaluate_epoch(
    module: torch.nn.Module, loaded: Callable[[torch.nn.Module], LoadedModel], evs: list[Evaluator]
) -> dict[str, Any]:
    """{evaluator name: its metrics} of `module` in eval mode (its mode is restored after)."""
    was = module.training
    module.eval()
    try:
        return {ev.name: ev(loaded(module)) for ev in evs}
    finally:
        module.train(was)


def metric_value(metrics: dict[str, Any], key: SelectKey) -> float:
    name, metric, _ = key
    if metric not in metrics[name]:
        raise SgMergeError(f"--select: {name} has no metric {metric!r}")
    return float(metrics[name][metric])


@dataclass
class BestEpoch(Generic[T]):
    """The best value seen, its epoch, and what was kept of it (weights, a context)."""

    higher: bool = True
    value: float | None = None
    epoch: int | None = None
    kept: T | None = None

    def improves(self, value: float) -> bool:
        if self.value is None:
            return True
        return value > self.value if self.higher else value < self.value

    def offer(self, value: float, epoch: int, keep: Callable[[], T] | None = None) -> bool:
        """Take (value, epoch) when it beats the best so far, and `keep()` with it."""
        if not self.improves(value):
            return False
        self.value, self.epoch = value, epoch
        if keep is not None:
            self.kept = keep()
        return True
