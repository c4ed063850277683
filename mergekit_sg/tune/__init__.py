"""Training loops: fine-tuning with forgetting mitigations (L1, L2, EWC, distillation, LoRA)
and diagonal Fisher estimation."""

from mergekit_sg.tune.fisher_file import FisherResult, compute_fisher, load_fisher
from mergekit_sg.tune.loop import FinetuneResult, finetune
from mergekit_sg.tune.options import FinetuneOptions, FisherOptions

__all__ = [
    "FinetuneOptions",
    "FinetuneResult",
    "FisherOptions",
    "FisherResult",
    "compute_fisher",
    "finetune",
    "load_fisher",
]
