"""The task a model spec names: `hf:embedding-classifier` (sentence-embedding encoder +
zero-shot head), `hf:seq-classification`, `hf:causal-lm` and `open_clip:ARCH`. Kept apart
from the `Task` base class so the families import the base and nothing imports back."""

from __future__ import annotations

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.tune.tasks.base import Task
from mergekit_sg.tune.tasks.clip_image import ClipTask
from mergekit_sg.tune.tasks.task_options import TaskOptions
from mergekit_sg.tune.tasks.text import CausalLMTask, TextClassificationTask


def build_task(opts: TaskOptions, device: torch.device) -> Task:
    """The task of `opts.model`, its model on `device` and the data of `opts` encoded."""
    family, _, arg = opts.model.partition(":")
    if family == "hf" and arg in ("embedding-classifier", "seq-classification"):
        return TextClassificationTask.build(opts, arg, device)
    if family == "hf" and arg == "causal-lm":
        return CausalLMTask.build(opts, device)
    if family == "open_clip":
        return ClipTask.build(opts, arg, device)
    raise SgMergeError(
        f"--model {opts.model!r}: finetune and fisher support hf:embedding-classifier, "
        "hf:seq-classification, hf:causal-lm and open_clip:ARCH"
    )
