"""Fine-tuning with forgetting mitigations: L1/L2/EWC penalties towards the pretrained weights,
distillation from the frozen pretrained model, or LoRA merged back on save.

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.finetuning.finetune_options import FinetuneOptions, Reg
    from mergekit_sg.tune.finetuning.lora import (
        add_lora,
        merge_back,
        merged_state_dict,
        resolve_targets,
    )
    from mergekit_sg.tune.finetuning.penalty import Penalty
    from mergekit_sg.tune.finetuning.regularizers import (
        Reduction,
        RegParams,
        distance_penalty,
        ewc_penalty,
        is_norm_or_bias,
        kd_loss,
        l1_penalty,
        l2_penalty,
        select_params,
    )
    from mergekit_sg.tune.finetuning.trainer import LOG_FILE, FinetuneResult, finetune, state_dir

_LAZY = {
    "FinetuneOptions": "mergekit_sg.tune.finetuning.finetune_options",
    "Reg": "mergekit_sg.tune.finetuning.finetune_options",
    "add_lora": "mergekit_sg.tune.finetuning.lora",
    "merge_back": "mergekit_sg.tune.finetuning.lora",
    "merged_state_dict": "mergekit_sg.tune.finetuning.lora",
    "resolve_targets": "mergekit_sg.tune.finetuning.lora",
    "Penalty": "mergekit_sg.tune.finetuning.penalty",
    "Reduction": "mergekit_sg.tune.finetuning.regularizers",
    "RegParams": "mergekit_sg.tune.finetuning.regularizers",
    "distance_penalty": "mergekit_sg.tune.finetuning.regularizers",
    "ewc_penalty": "mergekit_sg.tune.finetuning.regularizers",
    "is_norm_or_bias": "mergekit_sg.tune.finetuning.regularizers",
    "kd_loss": "mergekit_sg.tune.finetuning.regularizers",
    "l1_penalty": "mergekit_sg.tune.finetuning.regularizers",
    "l2_penalty": "mergekit_sg.tune.finetuning.regularizers",
    "select_params": "mergekit_sg.tune.finetuning.regularizers",
    "LOG_FILE": "mergekit_sg.tune.finetuning.trainer",
    "FinetuneResult": "mergekit_sg.tune.finetuning.trainer",
    "finetune": "mergekit_sg.tune.finetuning.trainer",
    "state_dir": "mergekit_sg.tune.finetuning.trainer",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "LOG_FILE",
    "FinetuneOptions",
    "FinetuneResult",
    "Penalty",
    "Reduction",
    "Reg",
    "RegParams",
    "add_lora",
    "distance_penalty",
    "ewc_penalty",
    "finetune",
    "is_norm_or_bias",
    "kd_loss",
    "l1_penalty",
    "l2_penalty",
    "merge_back",
    "merged_state_dict",
    "resolve_targets",
    "select_params",
    "state_dir",
]
