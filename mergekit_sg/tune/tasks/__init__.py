"""Training tasks: a live model built from a spec and a checkpoint, its data encoded, batching,
the forward pass, the loss and saving, for each model family (text classification, causal LM,
open_clip image classification).

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.tasks.base import IGNORE, StepOutput, Task
    from mergekit_sg.tune.tasks.build import build_task
    from mergekit_sg.tune.tasks.clip_image import parse_templates, zeroshot_weights
    from mergekit_sg.tune.tasks.data import subset
    from mergekit_sg.tune.tasks.task_options import TaskOptions, make
    from mergekit_sg.tune.tasks.text import encode_lm

_LAZY = {
    "IGNORE": "mergekit_sg.tune.tasks.base",
    "StepOutput": "mergekit_sg.tune.tasks.base",
    "Task": "mergekit_sg.tune.tasks.base",
    "build_task": "mergekit_sg.tune.tasks.build",
    "parse_templates": "mergekit_sg.tune.tasks.clip_image",
    "zeroshot_weights": "mergekit_sg.tune.tasks.clip_image",
    "subset": "mergekit_sg.tune.tasks.data",
    "TaskOptions": "mergekit_sg.tune.tasks.task_options",
    "make": "mergekit_sg.tune.tasks.task_options",
    "encode_lm": "mergekit_sg.tune.tasks.text",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "IGNORE",
    "StepOutput",
    "Task",
    "TaskOptions",
    "build_task",
    "encode_lm",
    "make",
    "parse_templates",
    "subset",
    "zeroshot_weights",
]
