"""The options of `finetune`: fine-tuning with an optional forgetting mitigation. One pydantic
model drives the CLI flags, the Python keyword arguments and YAML recipes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.tracking import (
    ReportToList,
    experiment_field,
    logging_dir_field,
    report_to_field,
)
from mergekit_sg.tune.tasks.task_options import TaskOptions

Reg = Literal["none", "l1", "l2", "ewc", "kd"]
RegParams = Literal["all", "no-head", "no-norms-biases"]  # what a penalty covers
Reduction = Literal["sum", "mean"]  # a penalty's sum, or its mean per parameter


class FinetuneOptions(TaskOptions):
    """Fine-tuning with an optional forgetting mitigation (regulariser, distillation or LoRA)."""

    eval: list[str] = Field(
        default=[], description="NAME=KIND:ARG evaluators run after each epoch (repeatable)."
    )
    epochs: int = Field(default=3, ge=1, description="Passes over the training data.")
    batch_size: int = Field(default=32, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    group_by_length: bool = Field(
        default=False,
        description="Batch texts of similar length together (less padding, faster on CPU).",
    )
    lr: float | None = Field(
        default=None, gt=0, description="AdamW learning rate (default 3e-5 open_clip, 5e-5 else)."
    )
    weight_decay: float | None = Field(
        default=None, ge=0, description="AdamW weight decay (default 0.1 open_clip, 0.01 else)."
    )
    schedule: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="Learning-rate schedule after the warm-up."
    )
    warmup_steps: int | None = Field(
        default=None, ge=0, description="Linear warm-up steps (default 5% of all steps)."
    )
    grad_clip: float | None = Field(
        default=1.0, gt=0, description="Clip the gradient norm to this (none: no clipping)."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16/fp16 autocast on GPU, fp32 on CPU."
    )
    reg: Reg = Field(default="none", description="Forgetting regulariser: l1, l2, ewc or kd.")
    reg_weight: float | None = Field(
        default=None, ge=0, description="Weight of the regulariser in the loss."
    )
    reg_params: RegParams = Field(
        default="all", description="Parameters the l1/l2/ewc penalty covers."
    )
    reg_reduction: Reduction = Field(
        default="sum", description="Penalty summed over parameters, or their mean."
    )
    fisher: str | None = Field(default=None, description="EWC: a Fisher file from sgmerge fisher.")
    kd_temperature: float = Field(default=2.0, gt=0, description="Distillation temperature.")
    lora_rank: int | None = Field(default=None, ge=1, description="Train LoRA adapters of rank R.")
    lora_alpha: float | None = Field(
        default=None, gt=0, description="LoRA scaling numerator (default 2 x rank)."
    )
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_targets: str | None = Field(
        default=None,
        description="Comma list of modules for LoRA: q,k,v,o (mapped to the architecture's "
        "names) or module-name suffixes (default q,v; open_clip: c_fc,c_proj).",
    )
    freeze_head: bool = Field(default=False, description="Keep the classification head fixed.")
    save: Literal["last", "best"] = Field(
        default="last", description="Write the last epoch's weights, or the best epoch's."
    )
    select: str | None = Field(
        default=None,
        description="Metric for --save best: NAME or NAME.METRIC (default: the first "
        "speciality evaluator's primary metric).",
    )
    log_every: int = Field(default=10, ge=1, description="Log the loss terms every N steps.")
    checkpoint_every: int | None = Field(
        default=None, ge=1, description="Save resumable state every N steps (and each epoch)."
    )
    resume: bool = Field(default=True, description="Continue from OUT's saved training state.")
    save_init: str | None = Field(
        default=None, description="Also write the initial model (the scan's alpha=0) here."
    )
    force: bool = Field(default=False, description="Replace existing destinations.")
    report_to: ReportToList = report_to_field()
    logging_dir: str | None = logging_dir_field()
    experiment: str | None = experiment_field()

    def check(self) -> None:
        """Rules between options, as one-line errors naming the flags."""
        if self.reg != "none" and self.reg_weight is None:
            raise SgMergeError(f"--reg {self.reg} needs --reg-weight W")
        if self.reg == "ewc" and not self.fisher:
            raise SgMergeError("--reg ewc needs --fisher FILE (made by sgmerge fisher)")
        if self.fisher and self.reg != "ewc":
            raise SgMergeError("--fisher is used by --reg ewc only")
        if self.lora_rank and self.reg in ("l1", "l2", "ewc"):
            raise SgMergeError(
                f"--reg {self.reg} penalises full weights but LoRA trains adapters; use one of them"
            )
