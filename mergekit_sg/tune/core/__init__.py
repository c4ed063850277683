"""The one training core every loop of `tune` runs on: seeding, device and mixed precision,
learning-rate schedules and batch order, the gradient step (accumulation, clipping, fp16
scaling), per-epoch evaluation and best-epoch selection, the JSONL log and the trackers it
feeds, the progress bar, the resumable state and the atomic write of a run.

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.core.best import (
        BestEpoch,
        SelectKey,
        evaluate_epoch,
        metric_value,
        select_key,
    )
    from mergekit_sg.tune.core.device import Precision, amp, autocast, resolve_device, seed_all
    from mergekit_sg.tune.core.epochs import train_epochs
    from mergekit_sg.tune.core.log import (
        LOG_FILE,
        Record,
        StepLog,
        add_terms,
        as_floats,
        write_json,
        write_jsonl,
    )
    from mergekit_sg.tune.core.optim import adamw
    from mergekit_sg.tune.core.output import (
        cpu_state,
        load_state,
        save_state,
        write_run,
        write_trained_card,
    )
    from mergekit_sg.tune.core.progress import TrainBar
    from mergekit_sg.tune.core.schedule import epoch_batches, epoch_lr, lr_factor, set_lr
    from mergekit_sg.tune.core.steps import GradientStep
    from mergekit_sg.tune.core.track import LogFollower, record_metrics

_LAZY = {
    "BestEpoch": "mergekit_sg.tune.core.best",
    "SelectKey": "mergekit_sg.tune.core.best",
    "evaluate_epoch": "mergekit_sg.tune.core.best",
    "metric_value": "mergekit_sg.tune.core.best",
    "select_key": "mergekit_sg.tune.core.best",
    "Precision": "mergekit_sg.tune.core.device",
    "amp": "mergekit_sg.tune.core.device",
    "autocast": "mergekit_sg.tune.core.device",
    "resolve_device": "mergekit_sg.tune.core.device",
    "seed_all": "mergekit_sg.tune.core.device",
    "train_epochs": "mergekit_sg.tune.core.epochs",
    "LOG_FILE": "mergekit_sg.tune.core.log",
    "Record": "mergekit_sg.tune.core.log",
    "StepLog": "mergekit_sg.tune.core.log",
    "add_terms": "mergekit_sg.tune.core.log",
    "as_floats": "mergekit_sg.tune.core.log",
    "write_json": "mergekit_sg.tune.core.log",
    "write_jsonl": "mergekit_sg.tune.core.log",
    "adamw": "mergekit_sg.tune.core.optim",
    "cpu_state": "mergekit_sg.tune.core.output",
    "load_state": "mergekit_sg.tune.core.output",
    "save_state": "mergekit_sg.tune.core.output",
    "write_run": "mergekit_sg.tune.core.output",
    "write_trained_card": "mergekit_sg.tune.core.output",
    "TrainBar": "mergekit_sg.tune.core.progress",
    "epoch_batches": "mergekit_sg.tune.core.schedule",
    "epoch_lr": "mergekit_sg.tune.core.schedule",
    "lr_factor": "mergekit_sg.tune.core.schedule",
    "set_lr": "mergekit_sg.tune.core.schedule",
    "GradientStep": "mergekit_sg.tune.core.steps",
    "LogFollower": "mergekit_sg.tune.core.track",
    "record_metrics": "mergekit_sg.tune.core.track",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "LOG_FILE",
    "BestEpoch",
    "GradientStep",
    "LogFollower",
    "Precision",
    "Record",
    "SelectKey",
    "StepLog",
    "TrainBar",
    "adamw",
    "add_terms",
    "amp",
    "as_floats",
    "autocast",
    "cpu_state",
    "epoch_batches",
    "epoch_lr",
    "evaluate_epoch",
    "load_state",
    "lr_factor",
    "metric_value",
    "record_metrics",
    "resolve_device",
    "save_state",
    "seed_all",
    "select_key",
    "set_lr",
    "train_epochs",
    "write_json",
    "write_jsonl",
    "write_run",
    "write_trained_card",
]
