"""CoOp prompts for a frozen open_clip CLIP: the few-shot, base-to-novel data protocol, the
prompt file and the prompt as a live model
(`--model python:mergekit_sg.tune.prompt:prompt_model`,
`--eval NAME=python:mergekit_sg.tune.prompt:prompt_eval,...`), the prompt loop and
`sgmerge coop`."""

from mergekit_sg.tune.prompt.fewshot import base_novel, few_shot, harmonic_mean
from mergekit_sg.tune.prompt.images import Images, read_images, sample_shots, split_classes
from mergekit_sg.tune.prompt.learn import LOG_FILE, PromptResult, coop, open_clip_spec, write_run
from mergekit_sg.tune.prompt.prompt_file import (
    PROMPT_FILE,
    PromptModel,
    build_learner,
    class_metrics,
    clip_logits,
    cosine_surrogate,
    evaluate,
    image_features,
    load_prompt,
    prompt_eval,
    prompt_logits,
    prompt_meta,
    prompt_model,
    read_prompt,
    save_prompt,
)
from mergekit_sg.tune.prompt.prompt_options import (
    CoopOptions,
    PromptDataOptions,
    PromptRunOptions,
    ScheduleOptions,
)
from mergekit_sg.tune.prompt.train import (
    PromptData,
    PromptTraining,
    SgdRates,
    heldout_metrics,
    prompt_data,
    split_accuracy,
    train_prompt,
)

__all__ = [
    "LOG_FILE",
    "PROMPT_FILE",
    "CoopOptions",
    "Images",
    "PromptData",
    "PromptDataOptions",
    "PromptModel",
    "PromptResult",
    "PromptRunOptions",
    "PromptTraining",
    "ScheduleOptions",
    "SgdRates",
    "base_novel",
    "build_learner",
    "class_metrics",
    "clip_logits",
    "coop",
    "cosine_surrogate",
    "evaluate",
    "few_shot",
    "harmonic_mean",
    "heldout_metrics",
    "image_features",
    "load_prompt",
    "open_clip_spec",
    "prompt_data",
    "prompt_eval",
    "prompt_logits",
    "prompt_meta",
    "prompt_model",
    "read_images",
    "read_prompt",
    "sample_shots",
    "save_prompt",
    "split_accuracy",
    "split_classes",
    "train_prompt",
    "write_run",
]
