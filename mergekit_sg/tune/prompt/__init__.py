"""CoOp prompts for a frozen open_clip CLIP: the few-shot, base-to-novel data protocol, the
prompt file and the prompt as a live model
(`--model python:mergekit_sg.tune.prompt:prompt_model`,
`--eval NAME=python:mergekit_sg.tune.prompt:prompt_eval,...`), the prompt loop and
`sgmerge coop`.

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.prompt.fewshot import base_novel, few_shot, harmonic_mean
    from mergekit_sg.tune.prompt.images import Images, read_images, sample_shots, split_classes
    from mergekit_sg.tune.prompt.learn import (
        LOG_FILE,
        PromptResult,
        coop,
        open_clip_spec,
        write_run,
    )
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

_LAZY = {
    "base_novel": "mergekit_sg.tune.prompt.fewshot",
    "few_shot": "mergekit_sg.tune.prompt.fewshot",
    "harmonic_mean": "mergekit_sg.tune.prompt.fewshot",
    "Images": "mergekit_sg.tune.prompt.images",
    "read_images": "mergekit_sg.tune.prompt.images",
    "sample_shots": "mergekit_sg.tune.prompt.images",
    "split_classes": "mergekit_sg.tune.prompt.images",
    "LOG_FILE": "mergekit_sg.tune.prompt.learn",
    "PromptResult": "mergekit_sg.tune.prompt.learn",
    "coop": "mergekit_sg.tune.prompt.learn",
    "open_clip_spec": "mergekit_sg.tune.prompt.learn",
    "write_run": "mergekit_sg.tune.prompt.learn",
    "PROMPT_FILE": "mergekit_sg.tune.prompt.prompt_file",
    "PromptModel": "mergekit_sg.tune.prompt.prompt_file",
    "build_learner": "mergekit_sg.tune.prompt.prompt_file",
    "class_metrics": "mergekit_sg.tune.prompt.prompt_file",
    "clip_logits": "mergekit_sg.tune.prompt.prompt_file",
    "cosine_surrogate": "mergekit_sg.tune.prompt.prompt_file",
    "evaluate": "mergekit_sg.tune.prompt.prompt_file",
    "image_features": "mergekit_sg.tune.prompt.prompt_file",
    "load_prompt": "mergekit_sg.tune.prompt.prompt_file",
    "prompt_eval": "mergekit_sg.tune.prompt.prompt_file",
    "prompt_logits": "mergekit_sg.tune.prompt.prompt_file",
    "prompt_meta": "mergekit_sg.tune.prompt.prompt_file",
    "prompt_model": "mergekit_sg.tune.prompt.prompt_file",
    "read_prompt": "mergekit_sg.tune.prompt.prompt_file",
    "save_prompt": "mergekit_sg.tune.prompt.prompt_file",
    "CoopOptions": "mergekit_sg.tune.prompt.prompt_options",
    "PromptDataOptions": "mergekit_sg.tune.prompt.prompt_options",
    "PromptRunOptions": "mergekit_sg.tune.prompt.prompt_options",
    "ScheduleOptions": "mergekit_sg.tune.prompt.prompt_options",
    "PromptData": "mergekit_sg.tune.prompt.train",
    "PromptTraining": "mergekit_sg.tune.prompt.train",
    "SgdRates": "mergekit_sg.tune.prompt.train",
    "heldout_metrics": "mergekit_sg.tune.prompt.train",
    "prompt_data": "mergekit_sg.tune.prompt.train",
    "split_accuracy": "mergekit_sg.tune.prompt.train",
    "train_prompt": "mergekit_sg.tune.prompt.train",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

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
