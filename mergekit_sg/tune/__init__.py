"""Training, split by concern over one training core (`core`: seeding, device, schedules,
gradient steps, per-epoch evaluation, best epoch, JSONL log, resumable state, atomic save):
`tasks` (model families and their data), `finetuning` (fine-tuning with forgetting
mitigations), `fisher` (diagonal Fisher estimation), `prompt` (CoOp prompts) and `mergetuning`
(MERGETUNE and the prompt benchmark). This face is what the commands and the CLI import.

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.finetuning import FinetuneOptions, FinetuneResult, finetune, state_dir
    from mergekit_sg.tune.fisher import FisherOptions, FisherResult, compute_fisher, load_fisher
    from mergekit_sg.tune.mergetuning import (
        MergetuneOptions,
        PromptBenchmarkOptions,
        WeightResult,
        mergetune,
        run_benchmark,
    )
    from mergekit_sg.tune.prompt import (
        CoopOptions,
        PromptResult,
        coop,
        load_prompt,
        prompt_eval,
        prompt_model,
    )
    from mergekit_sg.tune.tasks import TaskOptions

_LAZY = {
    "LOG_FILE": "mergekit_sg.tune.core",
    "FinetuneOptions": "mergekit_sg.tune.finetuning",
    "FinetuneResult": "mergekit_sg.tune.finetuning",
    "finetune": "mergekit_sg.tune.finetuning",
    "state_dir": "mergekit_sg.tune.finetuning",
    "FisherOptions": "mergekit_sg.tune.fisher",
    "FisherResult": "mergekit_sg.tune.fisher",
    "compute_fisher": "mergekit_sg.tune.fisher",
    "load_fisher": "mergekit_sg.tune.fisher",
    "MergetuneOptions": "mergekit_sg.tune.mergetuning",
    "PromptBenchmarkOptions": "mergekit_sg.tune.mergetuning",
    "WeightResult": "mergekit_sg.tune.mergetuning",
    "mergetune": "mergekit_sg.tune.mergetuning",
    "run_benchmark": "mergekit_sg.tune.mergetuning",
    "CoopOptions": "mergekit_sg.tune.prompt",
    "PromptResult": "mergekit_sg.tune.prompt",
    "coop": "mergekit_sg.tune.prompt",
    "load_prompt": "mergekit_sg.tune.prompt",
    "prompt_eval": "mergekit_sg.tune.prompt",
    "prompt_model": "mergekit_sg.tune.prompt",
    "TaskOptions": "mergekit_sg.tune.tasks",
    # the training log beside the output of `sgmerge coop`, `mergetune` and `finetune`
    "COOP_LOG_FILE": "mergekit_sg.tune.core.log:LOG_FILE",
    "MERGETUNE_LOG_FILE": "mergekit_sg.tune.core.log:LOG_FILE",
    "FINETUNE_LOG_FILE": "mergekit_sg.tune.core.log:LOG_FILE",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "COOP_LOG_FILE",
    "FINETUNE_LOG_FILE",
    "MERGETUNE_LOG_FILE",
    "CoopOptions",
    "FinetuneOptions",
    "FinetuneResult",
    "FisherOptions",
    "FisherResult",
    "MergetuneOptions",
    "PromptBenchmarkOptions",
    "PromptResult",
    "TaskOptions",
    "WeightResult",
    "compute_fisher",
    "coop",
    "finetune",
    "load_fisher",
    "load_prompt",
    "mergetune",
    "prompt_eval",
    "prompt_model",
    "run_benchmark",
    "state_dir",
]
