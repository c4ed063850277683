"""The prompt-training loop shared by `sgmerge coop` and MERGETUNE's prompt mode: CoOp's data
protocol (seeded K-shot sampling, base classes, augmentation), SGD with one constant warm-up
epoch then a per-epoch cosine schedule, mixed precision on GPU only, image features computed
once per batch with no gradient (the image tower is frozen), the context with the best
validation accuracy kept, a JSONL log of every loss term, and base/novel test accuracy with
their harmonic mean."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError
from mergekit_sg.tune.core.best import BestEpoch
from mergekit_sg.tune.core.device import amp, autocast
from mergekit_sg.tune.core.epochs import train_epochs
from mergekit_sg.tune.core.log import Record, StepLog
from mergekit_sg.tune.core.progress import TrainBar
from mergekit_sg.tune.core.schedule import epoch_lr
from mergekit_sg.tune.core.steps import GradientStep
from mergekit_sg.tune.prompt.fewshot import harmonic_mean
from mergekit_sg.tune.prompt.images import (
    Images,
    loader,
    read_images,
    sample_shots,
    split_classes,
    train_transform,
)
from mergekit_sg.tune.prompt.prompt_file import PromptModel, evaluate, image_features
from mergekit_sg.tune.prompt.prompt_options import PromptRunOptions

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class PromptData:
    """Training, validation and test images of a run (training/validation relabelled to the
    trained classes; test kept whole for the base/novel split)."""

    train: Images
    val: Images | None
    test: Images | None
    trained_on: str  # "base" or "all"
    classnames: list[str]  # every class of the dataset, in label order


def prompt_data(opts: PromptRunOptions, data: str) -> PromptData:
    """Read and split the images of a run as CoOp's protocol does."""
    split = "base" if opts.base_classes else "all"
    whole = read_images(data, opts.classnames)
    full = split_classes(whole, split)
    train, rest = sample_shots(full, opts.shots, opts.seed)
    n_val = opts.val_shots if opts.val_shots is not None else min(opts.shots or 4, 4)
    val = None
    if opts.val_data:
        val_all = split_classes(read_images(opts.val_data, opts.classnames), split)
        val = sample_shots(val_all, n_val or None, opts.seed)[0] if n_val else val_all
    elif n_val and rest:
        pool = full.take(rest)
        val = sample_shots(pool, n_val, opts.seed)[0]
    test = read_images(opts.test_data, opts.classnames) if opts.test_data else None
    if test is not None and test.classnames != whole.classnames:
        raise SgMergeError(f"--test-data {opts.test_data}: its classes are not the training data's")
    return PromptData(train, val, test, split, whole.classnames)


@dataclass
class PromptTraining:
    ctx: torch.Tensor  # the kept context (best validation, else last)
    best_epoch: int | None
    steps: int
    log: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class SgdRates:
    """CoOp's SGD rates: `lr` after `warmup_epochs` epochs at the options' warm-up lr."""

    lr: float
    weight_decay: float
    warmup_epochs: int


def train_prompt(
    pm: PromptModel,
    ctx0: torch.Tensor,
    objective: Objective,
    data: PromptData,
    opts: PromptRunOptions,
    rates: SgdRates,
    config: dict[str, Any],
    quiet: bool = True,
    on_log: Callable[[list[Record]], None] | None = None,
) -> PromptTraining:
    """Train the context from `ctx0` on `data.train` with `objective(feats, labels, ctx)`,
    which returns the loss terms ("loss" is minimised); image features are computed once per
    batch with no gradient (the image tower is frozen); the context with the best validation
    accuracy is kept. `on_log(log)` after every step and epoch (the trackers follow it)."""
    device = pm.ctx.device
    amp_dtype, scaler = amp(device, opts.precision)
    in_amp = autocast(device, amp_dtype)
    ctx = torch.nn.Parameter(ctx0.detach().clone().float().to(device))
    optimizer = torch.optim.SGD(
        [ctx], lr=rates.lr, momentum=opts.momentum, weight_decay=rates.weight_decay
    )
    transform = train_transform(pm.loaded.preprocess, opts.augment)
    batches = loader(data.train, transform, opts.batch_size, True, opts.seed, opts.workers)
    val_feats = image_features(pm, data.val, opts.batch_size) if data.val else None
    total = opts.epochs * len(batches)
    log: list[Record] = [{"type": "config", **config, "steps": total}]
    best: BestEpoch[torch.Tensor] = BestEpoch(higher=True)
    if on_log is not None:
        on_log(log)

    def terms_of(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        pixels, labels = batch[0].to(device), batch[1].to(device)
        with torch.no_grad(), in_amp():  # frozen image tower: once per batch
            feats = F.normalize(pm.clip.encode_image(pixels).float(), dim=-1)
        with in_amp():
            return objective(feats, labels, ctx)

    def validate(epoch: int, step: int) -> None:
        if val_feats is None or data.val is None:
            return
        with torch.no_grad():
            pm.ctx.data.copy_(ctx.data)
            acc = evaluate(pm, data.val, val_feats)["accuracy"]
        log.append({"type": "eval", "epoch": epoch, "step": step, "val_accuracy": acc})
        best.offer(acc, epoch, lambda: ctx.detach().clone())

    steps = train_epochs(
        opts.epochs,
        lambda epoch: batches,
        terms_of,
        GradientStep(optimizer, [ctx], scaler),
        lambda e: epoch_lr(e, opts.epochs, rates.lr, rates.warmup_epochs, opts.warmup_lr),
        StepLog(log, opts.log_every, total),
        TrainBar(quiet),
        validate,
        (lambda: on_log(log)) if on_log is not None else None,
    )
    kept = best.kept if best.kept is not None else ctx.detach().clone()
    pm.ctx.data.copy_(kept)
    return PromptTraining(kept.cpu(), best.epoch, steps, log)


def heldout_metrics(
    pm: PromptModel, data: PromptData, batch_size: int = 64, template: str | None = None
) -> dict[str, float]:
    """Accuracy on all test classes; with base-class training also base, novel and their
    harmonic mean 2BN/(B+N) (each split scored among its own classes, as CoOp does). With a
    `template`, CLIP's zero-shot classifier from that hand-written template instead."""
    if data.test is None:
        return {}
    return split_accuracy(pm, data.test, data.trained_on == "base", batch_size, template)


def split_accuracy(
    pm: PromptModel,
    images: Images,
    base_novel: bool,
    batch_size: int = 64,
    template: str | None = None,
    cache: dict[Any, torch.Tensor] | None = None,
) -> dict[str, float]:
    """{"all"} or {"all", "base", "novel", "hm"} accuracies of the prompt (or template)."""
    splits = ("all", "base", "novel") if base_novel else ("all",)
    out = {}
    for which in splits:
        part = split_classes(images, which)
        key = (images.source, which)
        feats = cache.get(key) if cache is not None else None
        if feats is None:
            feats = image_features(pm, part, batch_size)
            if cache is not None:
                cache[key] = feats
        out[which] = evaluate(pm, part, feats, template=template)["accuracy"]
    if base_novel:
        out["hm"] = harmonic_mean(out["base"], out["novel"])
    return out
