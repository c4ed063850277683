"""The options of `mergetune`: one model for its three modes (prompt, head, parameter subset),
with the mode's defaults filled in by `resolved()` and options of the other mode refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.tracking import (
    ReportToList,
    experiment_field,
    logging_dir_field,
    report_to_field,
)
from mergekit_sg.tune.prompt.prompt_options import PromptDataOptions, ScheduleOptions
from mergekit_sg.tune.tasks.task_options import TaskOptions

Mode = Literal["prompt", "head", "subset"]


@dataclass(frozen=True)
class Settings:
    """The resolved rates and optimizer of a run (the mode's defaults filled in)."""

    mode: Mode
    lr: float
    weight_decay: float
    warmup_epochs: int
    optimizer: Literal["sgd", "adamw"]

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
            "optimizer": self.optimizer,
        }


class MergetuneOptions(TaskOptions, PromptDataOptions, ScheduleOptions):
    """MERGETUNE continued fine-tuning; the defaults are the method's reference settings."""

    data: str = Field(
        description="Training data: images (folder or CSV; for prompts also a CoOp split, "
        "split_zhou_X.json:train) for prompts and open_clip; for text models a CSV/JSONL or a "
        "built-in set (rotten-tomatoes)."
    )
    finetuned: str = Field(
        description="The fine-tuned model w2: a prompt from sgmerge coop, or a checkpoint."
    )
    trainable: str = Field(
        default="prompt",
        description="prompt (a CoOp context), head (the linear classification head) or a glob "
        "of parameter names (e.g. 'visual.transformer.resblocks.11.*').",
    )
    w_zs: float = Field(default=10.0, ge=0, description="Weight W of the zero-shot surrogate.")
    w_lmc: float = Field(default=1.0, ge=0, description="Weight W_lmc of the path loss.")
    num_points: int = Field(default=5, ge=1, description="Path points K between w2 and w.")
    points: Literal["grid", "random"] = Field(
        default="grid",
        description="grid: (2k+1)/2K (0.1, 0.3, ..., 0.9 for K=5); random: uniform per step.",
    )
    zs_loss: Literal["cos", "l2"] = Field(
        default="cos", description="Prompt mode: 1 - cos(T(w), T_zs), or squared distance."
    )
    zs_template: str = Field(
        default="a photo of a {}.",
        description="Prompt mode: the dataset's hand-written template, e.g. "
        "'a photo of a {}, a type of pet.'",
    )
    fisher: str | None = Field(
        default=None,
        description="Head/subset: diagonal Fisher file from sgmerge fisher (default identity).",
    )
    zs_term: Literal["quadratic", "path"] = Field(
        default="quadratic",
        description="Head/subset: the zero-shot term. quadratic: (w - w1)^T F (w - w1), the "
        "second-order surrogate; path: mean_k L(w1 + a_k (w - w1)) on the training data, the "
        "exact path loss to the zero-shot model (when that model's loss is the training task's, "
        "e.g. a zero-shot head; K more forward passes per step).",
    )
    optimizer: Literal["auto", "sgd", "adamw"] = Field(
        default="auto", description="auto: SGD for prompts, AdamW for heads and subsets."
    )
    lr: float | None = Field(
        default=None,
        gt=0,
        description="Learning rate (default 0.002 prompt, 1e-3 head, 1e-5 subset).",
    )
    weight_decay: float | None = Field(
        default=None, ge=0, description="Weight decay (default 5e-4 prompt, 0 otherwise)."
    )
    warmup_epochs: int | None = Field(
        default=None,
        ge=0,
        description="Epochs at the constant warm-up lr (default 1 prompt, 0 otherwise).",
    )
    eval: list[str] = Field(
        default=[],
        description="Head/subset: NAME=KIND:ARG evaluators after each epoch; the best epoch "
        "by the first speciality one is kept.",
    )
    cache_features: bool = Field(
        default=True,
        description="Head mode: keep the frozen features of every example for the whole run.",
    )
    force: bool = Field(default=False, description="Replace an existing destination.")
    report_to: ReportToList = report_to_field()
    logging_dir: str | None = logging_dir_field()
    experiment: str | None = experiment_field()

    @property
    def prompt_mode(self) -> bool:
        return self.trainable == "prompt"

    def resolved(self) -> Settings:
        """lr, weight decay, warm-up and optimizer with the mode's defaults filled in."""
        mode = "prompt" if self.prompt_mode else ("head" if self.trainable == "head" else "subset")
        lr = self.lr or {"prompt": 0.002, "head": 1e-3, "subset": 1e-5}[mode]
        wd = (
            self.weight_decay
            if self.weight_decay is not None
            else (5e-4 if mode == "prompt" else 0.0)
        )
        warm = self.warmup_epochs if self.warmup_epochs is not None else int(mode == "prompt")
        opt = (
            self.optimizer if self.optimizer != "auto" else ("sgd" if mode == "prompt" else "adamw")
        )
        return Settings(mode, lr, wd, warm, opt)


PROMPT_ONLY = (
    "classnames",
    "val_data",
    "test_data",
    "shots",
    "val_shots",
    "base_classes",
    "augment",
    "workers",
    "zs_loss",
    "zs_template",
)
WEIGHTS_ONLY = (
    "text_column",
    "label_column",
    "prompt_column",
    "completion_column",
    "labels",
    "train_size",
    "zeroshot_head",
    "head_scale",
    "max_length",
    "mask_prompt",
    "fisher",
    "zs_term",
    "eval",
    "cache_features",
)


def check_mode(opts: MergetuneOptions, given: set[str]) -> None:
    """An option of the other mode is an error, not silently ignored."""
    wrong = PROMPT_ONLY if not opts.prompt_mode else WEIGHTS_ONLY
    bad = [n for n in wrong if n in given]
    if bad:
        flag = "--" + bad[0].replace("_", "-")
        where = "prompt mode" if not opts.prompt_mode else "--trainable head or a parameter glob"
        raise SgMergeError(f"{flag} is for {where} (--trainable {opts.trainable!r} here)")
