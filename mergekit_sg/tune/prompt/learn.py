"""`sgmerge coop`: learn a CoOp prompt (n_ctx context vectors before each class name) for a
frozen open_clip CLIP on few-shot images. The result is the fine-tuned endpoint w2 that
MERGETUNE continues; `--save-init` also writes the starting prompt ("a photo of a {}."), the
zero-shot endpoint of the prompt path."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.tracking import open_tracker, staging_beside
from mergekit_sg.models.adapters import load_model
from mergekit_sg.models.coop import template_features
from mergekit_sg.tune.core import LOG_FILE, LogFollower, Record, resolve_device, seed_all
from mergekit_sg.tune.core import write_run as write_outputs
from mergekit_sg.tune.prompt.prompt_file import (
    PromptModel,
    build_learner,
    clip_logits,
    cosine_surrogate,
    prompt_meta,
    save_prompt,
)
from mergekit_sg.tune.prompt.prompt_options import CoopOptions
from mergekit_sg.tune.prompt.train import SgdRates, heldout_metrics, prompt_data, train_prompt
from mergekit_sg.tune.tasks import make
from mergekit_sg.version import TOOLKIT

__all__ = ["LOG_FILE", "PromptResult", "coop", "open_clip_spec", "write_run"]
SUMMARY_FILE = "coop.json"


@dataclass
class PromptResult:
    out: Path
    init: Path | None
    steps: int
    best_epoch: int | None
    test: dict[str, float]
    seconds: float
    log: list[dict[str, Any]]


def open_clip_spec(spec: str) -> None:
    if not spec.startswith("open_clip"):
        raise SgMergeError(f"--model {spec!r}: prompts need an open_clip model (open_clip:ARCH)")


def write_run(
    out: Path,
    ctx: torch.Tensor,
    meta: dict[str, Any],
    log: list[Record],
    summary: dict[str, Any],
    summary_file: str,
    force: bool,
    place: Callable[[Path], object] | None = None,
) -> None:
    """The prompt, its training log and summary (and `place`'s tracker files), atomically."""
    save = lambda tmp: save_prompt(tmp, ctx, meta)  # noqa: E731
    write_outputs(out, save, log, summary_file, summary, force, place=place)


def _kg_target(
    opts: CoopOptions, clip: torch.nn.Module, tokenizer: Any, classes: list[str]
) -> torch.Tensor | None:
    """KgCoOp's T_zs (the template's normalised text features, frozen), or None for CoOp."""
    if opts.kg_weight == 0:
        return None
    if "{}" not in opts.zs_template:
        raise SgMergeError(f"--zs-template {opts.zs_template!r}: needs {{}} for the class name")
    return template_features(clip, tokenizer, classes, opts.zs_template).float()


def coop(
    out: str | Path, options: CoopOptions | None = None, quiet: bool = True, **kwargs: Any
) -> PromptResult:
    """Train a CoOp prompt and write it to `out` (see CoopOptions)."""
    t0 = time.perf_counter()
    opts: CoopOptions = make(CoopOptions, options, kwargs)
    open_clip_spec(opts.model)
    out = Path(out)
    check_destination(out, opts.force)
    init_dir = Path(opts.save_init) if opts.save_init else None
    if init_dir is not None:
        check_destination(init_dir, opts.force)
    device = resolve_device(opts.device)
    seed_all(opts.seed)
    data = prompt_data(opts, opts.data)
    loaded = load_model(opts.model, opts.pretrained, str(device), head=False)
    clip = loaded.module.float().requires_grad_(False)
    init = opts.ctx_init.strip() or None
    gen = torch.Generator().manual_seed(opts.seed)
    classes = data.train.classnames
    layout = {"n_ctx": opts.n_ctx, "init": init}
    learner = build_learner(clip, loaded.tokenizer, classes, layout, generator=gen)
    config = {"command": "coop", "toolkit": TOOLKIT, "options": opts.model_dump()}
    meta = prompt_meta(
        opts.model, opts.pretrained, data.classnames, learner.n_ctx, init, data.trained_on, config
    )
    pm = PromptModel(loaded, learner.ctx.detach(), meta)
    scale = pm.scale()
    t_zs = _kg_target(opts, clip, loaded.tokenizer, classes)

    def objective(feats: torch.Tensor, labels: torch.Tensor, ctx: torch.Tensor) -> dict:
        text = pm.text_features(classes, ctx)
        loss = F.cross_entropy(clip_logits(feats, text, scale), labels)
        if t_zs is None:  # plain CoOp
            return {"loss": loss}
        kg = cosine_surrogate(text, t_zs)
        return {"loss": loss + opts.kg_weight * kg, "main": loss, "kg": kg}

    with open_tracker(opts, out, "coop", staging_beside(out)) as tracker:
        follow = LogFollower(tracker)
        run = train_prompt(
            pm,
            learner.ctx.detach(),
            objective,
            data,
            opts,
            SgdRates(opts.lr, opts.weight_decay, opts.warmup_epochs),
            config={**config, "examples": len(data.train.paths), "classes": classes},
            quiet=quiet,
            on_log=follow,
        )
        test = heldout_metrics(pm, data, opts.batch_size)
        if test:
            run.log.append({"type": "test", **test})
        run.log.append({"type": "done", "steps": run.steps, "best_epoch": run.best_epoch})
        follow(run.log)
        seconds = time.perf_counter() - t0
        summary = {
            "toolkit": TOOLKIT,
            "options": opts.model_dump(),
            "examples": len(data.train.paths),
            "trained_on": data.trained_on,
            "best_epoch": run.best_epoch,
            "test": test,
            "seconds": round(seconds, 2),
        }
        write_run(out, run.ctx, meta, run.log, summary, SUMMARY_FILE, opts.force, tracker.place)
    if init_dir is not None:
        init_meta = {**meta, "trained_on": "none (the initial prompt)"}
        note = {"init_of": str(out)}
        write_run(init_dir, learner.ctx.detach(), init_meta, [], note, SUMMARY_FILE, opts.force)
    return PromptResult(out, init_dir, run.steps, run.best_epoch, test, seconds, run.log)
