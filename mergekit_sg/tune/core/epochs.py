"""The epoch loop of the runs that train one update per batch with a per-epoch learning rate
(CoOp prompts, MERGETUNE): set the epoch's lr, then per batch the loss terms, one gradient step,
the step log and the progress bar; after each epoch a hook (evaluation, best epoch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

from mergekit_sg.tune.core.log import StepLog
from mergekit_sg.tune.core.progress import TrainBar
from mergekit_sg.tune.core.schedule import set_lr
from mergekit_sg.tune.core.steps import GradientStep

B = TypeVar("B")
Terms = dict[str, torch.Tensor]


def train_epochs(
    epochs: int,
    batches: Callable[[int], Iterable[B]],
    terms_of: Callable[[B], Terms],
    stepper: GradientStep,
    lr_of: Callable[[int], float],
    steplog: StepLog,
    bar: TrainBar,
    after_epoch: Callable[[int, int], None] | None = None,
    on_log: Callable[[], None] | None = None,
) -> int:
    """Run `epochs` epochs; `terms_of(batch)["loss"]` is minimised; `after_epoch(epoch, step)`
    (epoch counted from 1) runs with the bar paused; `on_log()` after every step and epoch
    (the trackers read the log's new records). Returns the number of steps taken."""
    step = 0
    bar.start(steplog.total)
    try:
        for epoch in range(epochs):
            rate = lr_of(epoch)
            set_lr(stepper.optimizer, rate)
            for batch in batches(epoch):
                terms = terms_of(batch)
                stepper.backward(terms["loss"].float())
                stepper.step()
                step += 1
                steplog.record(terms, step, epoch + 1, rate)
                if on_log is not None:
                    on_log()
                bar.advance(terms, epoch + 1, epochs)
            if after_epoch is not None:
                bar.pause()
                after_epoch(epoch + 1, step)
                bar.resume()
            if on_log is not None:
                on_log()
    finally:
        bar.stop()
    return step
