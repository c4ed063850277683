"""Training loops: fine-tuning with forgetting mitigations (L1, L2, EWC, distillation, LoRA)
and diagonal Fisher estimation."""

from mergekit_sg.tune.benchmark import PromptBenchmarkOptions, run_benchmark
from mergekit_sg.tune.coop import LOG_FILE as COOP_LOG_FILE
from mergekit_sg.tune.coop import CoopOptions, PromptResult, coop
from mergekit_sg.tune.fisher_file import FisherResult, compute_fisher, load_fisher
from mergekit_sg.tune.loop import FinetuneResult, finetune
from mergekit_sg.tune.mergetune import MergetuneOptions, mergetune
from mergekit_sg.tune.mergetune_weights import LOG_FILE as MERGETUNE_LOG_FILE
from mergekit_sg.tune.options import FinetuneOptions, FisherOptions

__all__ = [
    "COOP_LOG_FILE",
    "MERGETUNE_LOG_FILE",
    "CoopOptions",
    "FinetuneOptions",
    "FinetuneResult",
    "FisherOptions",
    "FisherResult",
    "MergetuneOptions",
    "PromptBenchmarkOptions",
    "PromptResult",
    "compute_fisher",
    "coop",
    "finetune",
    "load_fisher",
    "mergetune",
    "run_benchmark",
]
