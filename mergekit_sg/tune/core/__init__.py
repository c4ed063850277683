"""The one training core every loop of `tune` runs on: seeding, device and mixed precision,
learning-rate schedules and batch order, the gradient step (accumulation, clipping, fp16
scaling), per-epoch evaluation and best-epoch selection, the JSONL log and the trackers it
feeds, the progress bar, the resumable state and the atomic write of a run."""

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
