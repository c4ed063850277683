"""The options of a prompt run: CoOp's few-shot, base-to-novel data protocol, its SGD schedule,
and `sgmerge coop`'s model and prompt layout. The protocols name what the shared prompt loop
reads from the options of either command (`coop`, MERGETUNE's prompt mode)."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mergekit_sg.io.tracking import (
    ReportToList,
    experiment_field,
    logging_dir_field,
    report_to_field,
)


class PromptDataOptions(BaseModel):
    """The data of a prompt run: CoOp's few-shot, base-to-novel protocol."""

    model_config = ConfigDict(extra="forbid")

    classnames: str | None = Field(
        default=None,
        description="Class-name file, one per line in label order (default: the CoOp split "
        "file's names, or the folder names, with _ as spaces).",
    )
    val_data: str | None = Field(
        default=None,
        description="Validation images, e.g. split_zhou_X.json:val (default: unused training "
        "images).",
    )
    test_data: str | None = Field(
        default=None,
        description="Test images, e.g. split_zhou_X.json:test: base/novel accuracy and their "
        "harmonic mean.",
    )
    shots: int | None = Field(default=16, ge=1, description="Training images per class.")
    val_shots: int | None = Field(
        default=None, ge=0, description="Validation images per class (default min(shots, 4))."
    )
    base_classes: bool = Field(
        default=False, description="Train on the base classes (first ceil(n/2) labels) only."
    )
    augment: bool = Field(default=True, description="Random resized crop + horizontal flip.")
    workers: int = Field(default=0, ge=0, description="Data-loading worker processes.")


class ScheduleOptions(BaseModel):
    """CoOp's optimisation: SGD, one constant warm-up epoch, then cosine."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=10, ge=1, description="Passes over the few-shot set.")
    batch_size: int = Field(default=128, ge=1, description="Images per step.")
    momentum: float = Field(default=0.9, ge=0, description="SGD momentum.")
    warmup_lr: float = Field(default=1e-5, ge=0, description="Constant lr of the warm-up.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16/fp16 autocast on GPU, fp32 on CPU."
    )
    log_every: int = Field(default=10, ge=1, description="Log the loss terms every N steps.")


class PromptRunOptions(Protocol):
    """What the prompt data protocol and the prompt loop read (CoopOptions and
    MergetuneOptions both have it)."""

    classnames: str | None
    val_data: str | None
    test_data: str | None
    shots: int | None
    val_shots: int | None
    base_classes: bool
    augment: bool
    workers: int
    seed: int
    epochs: int
    batch_size: int
    momentum: float
    warmup_lr: float
    precision: str
    log_every: int


class CoopOptions(PromptDataOptions, ScheduleOptions):
    """CoOp prompt learning on a frozen open_clip model."""

    model: str = Field(description="open_clip:ARCH (e.g. open_clip:ViT-B-16).")
    pretrained: str = Field(description="CLIP weights: a file, directory or Hub reference.")
    data: str = Field(
        description="Training images: a class-per-folder tree, a CSV manifest or a split of "
        "CoOp's layout (DIR/split_zhou_X.json:train, fgvc_aircraft/images_variant_train.txt)."
    )
    n_ctx: int = Field(default=4, ge=1, description="Context vectors (ignored with --ctx-init).")
    ctx_init: str = Field(
        default="a photo of a",
        description="Words whose embeddings start the context ('' for random N(0, 0.02)).",
    )
    lr: float = Field(default=0.002, gt=0, description="SGD learning rate after the warm-up.")
    weight_decay: float = Field(default=5e-4, ge=0, description="SGD weight decay.")
    warmup_epochs: int = Field(default=1, ge=0, description="Epochs at the constant warm-up lr.")
    seed: int = Field(default=1, description="Seed of the few-shot sample, order and crops.")
    kg_weight: float = Field(
        default=0.0,
        ge=0,
        description="KgCoOp: add W * (1 - mean_c cos(T(w)_c, T_zs_c)), T_zs from --zs-template "
        "(KgCoOp's default W is 8.0; 0 is plain CoOp).",
    )
    zs_template: str = Field(
        default="a photo of a {}.",
        description="The dataset's hand-written template, for T_zs of --kg-weight.",
    )
    device: str = Field(default="auto", description="cpu, cuda[:N] or auto.")
    save_init: str | None = Field(
        default=None, description="Also write the initial prompt (the zero-shot one) here."
    )
    force: bool = Field(default=False, description="Replace existing destinations.")
    report_to: ReportToList = report_to_field()
    logging_dir: str | None = logging_dir_field()
    experiment: str | None = experiment_field()
