"""Training tasks: a live model built from a spec and a checkpoint, its data encoded, batching,
the forward pass, the loss and saving, for each model family (text classification, causal LM,
open_clip image classification)."""

from mergekit_sg.tune.tasks.base import IGNORE, StepOutput, Task
from mergekit_sg.tune.tasks.build import build_task
from mergekit_sg.tune.tasks.clip_image import parse_templates, zeroshot_weights
from mergekit_sg.tune.tasks.data import subset
from mergekit_sg.tune.tasks.task_options import TaskOptions, make
from mergekit_sg.tune.tasks.text import encode_lm

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
