"""Fine-tuning with forgetting mitigations: L1/L2/EWC penalties towards the pretrained weights,
distillation from the frozen pretrained model, or LoRA merged back on save."""

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
