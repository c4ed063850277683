"""Training, split by concern over one training core (`core`: seeding, device, schedules,
gradient steps, per-epoch evaluation, best epoch, JSONL log, resumable state, atomic save):
`tasks` (model families and their data), `finetuning` (fine-tuning with forgetting
mitigations), `fisher` (diagonal Fisher estimation), `prompt` (CoOp prompts) and `mergetuning`
(MERGETUNE and the prompt benchmark). This face is what the commands and the CLI import."""

from mergekit_sg.tune.core import LOG_FILE
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

COOP_LOG_FILE = LOG_FILE  # the training log beside a prompt from `sgmerge coop`
MERGETUNE_LOG_FILE = LOG_FILE  # the training log beside a `sgmerge mergetune` output
FINETUNE_LOG_FILE = LOG_FILE  # the training log beside a `sgmerge finetune` output

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
