"""MERGETUNE's prompt mode: w is a CoOp context, started at the fine-tuned prompt w2;
L_zs = 1 - mean cos(T(w), T_zs) with T_zs the text features of the dataset's hand-written
template; the path points interpolate text features. Image features are computed once per batch
and reused by every term; T(w2) and T_zs once per run."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.tracking import Tracker
from mergekit_sg.models.adapters import load_model
from mergekit_sg.models.coop import template_features
from mergekit_sg.tune.core import LogFollower, resolve_device, seed_all
from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions
from mergekit_sg.tune.mergetuning.objective import path_alphas, prompt_objective
from mergekit_sg.tune.prompt import (
    PromptModel,
    PromptResult,
    SgdRates,
    heldout_metrics,
    open_clip_spec,
    prompt_data,
    prompt_meta,
    read_prompt,
    train_prompt,
    write_run,
)
from mergekit_sg.version import TOOLKIT

SUMMARY_FILE = "mergetune.json"


def prompt_mode(
    opts: MergetuneOptions, out: Path, quiet: bool = True, tracker: Tracker | None = None
) -> PromptResult:
    """Train the prompt from w2 with the MERGETUNE objective and write it to `out` (the log
    followed by `tracker`)."""
    tracker = tracker or Tracker()
    follow = LogFollower(tracker)
    t0 = time.perf_counter()
    open_clip_spec(opts.model)
    if "{}" not in opts.zs_template:
        raise SgMergeError(f"--zs-template {opts.zs_template!r}: needs {{}} for the class name")
    settings = opts.resolved()
    if settings.optimizer != "sgd":
        raise SgMergeError("prompt mode trains with SGD (CoOp's optimiser); drop --optimizer")
    ft_ctx, ft_meta = read_prompt(opts.finetuned)
    device = resolve_device(opts.device)
    seed_all(opts.seed)
    data = prompt_data(opts, opts.data)
    loaded = load_model(opts.model, opts.pretrained, str(device), head=False)
    clip = loaded.module.float().requires_grad_(False)
    width = clip.token_embedding.weight.shape[1] if hasattr(clip, "token_embedding") else None
    if width is not None and ft_ctx.shape[-1] != width:
        raise SgMergeError(
            f"{opts.finetuned}: context width {ft_ctx.shape[-1]} does not fit {opts.model} "
            f"(token width {width})"
        )
    pm = PromptModel(loaded, ft_ctx, ft_meta).to(device)
    classes = data.train.classnames
    with torch.no_grad():  # frozen: computed once per run
        t_w2 = pm.text_features(classes, pm.ctx).float()
        t_zs = template_features(clip, loaded.tokenizer, classes, opts.zs_template).float()
    scale = pm.scale()
    gen = torch.Generator().manual_seed(opts.seed)
    grid = path_alphas(opts.num_points)

    def objective(feats: torch.Tensor, labels: torch.Tensor, ctx: torch.Tensor) -> dict:
        alphas = grid if opts.points == "grid" else path_alphas(opts.num_points, "random", gen)
        t_w = pm.text_features(classes, ctx)
        return prompt_objective(
            feats, labels, t_w, t_w2, t_zs, scale, alphas, opts.w_zs, opts.w_lmc, opts.zs_loss
        )

    config = {
        "command": "mergetune",
        "toolkit": TOOLKIT,
        "options": opts.model_dump(),
        **settings.as_dict(),
        "objective": "main + w_zs * zs + w_lmc * lmc",
        "examples": len(data.train.paths),
        "classes": classes,
        "alphas": grid if opts.points == "grid" else "random",
    }
    run = train_prompt(
        pm,
        ft_ctx.to(device),
        objective,
        data,
        opts,
        SgdRates(settings.lr, settings.weight_decay, settings.warmup_epochs),
        config=config,
        quiet=quiet,
        on_log=follow,
    )
    test = heldout_metrics(pm, data, opts.batch_size)
    if test:
        run.log.append({"type": "test", **test})
    run.log.append({"type": "done", "steps": run.steps, "best_epoch": run.best_epoch})
    follow(run.log)
    meta = prompt_meta(
        opts.model,
        opts.pretrained,
        data.classnames,
        ft_meta["n_ctx"],
        ft_meta.get("init") or None,
        data.trained_on,
        config,
        zs_template=opts.zs_template,
        finetuned=opts.finetuned,
    )
    seconds = time.perf_counter() - t0
    summary = {
        "toolkit": TOOLKIT,
        "options": opts.model_dump(),
        **settings.as_dict(),
        "best_epoch": run.best_epoch,
        "test": test,
        "seconds": round(seconds, 2),
    }
    write_run(out, run.ctx, meta, run.log, summary, SUMMARY_FILE, opts.force, tracker.place)
    return PromptResult(out, None, run.steps, run.best_epoch, test, seconds, run.log)
