"""MERGETUNE in weight space: head mode (`--trainable head`, the linear classification head over
frozen features) and subset mode (`--trainable GLOB`, any named parameters of an open_clip or
Hugging Face model). The continued parameters w start at the fine-tuned w2; only they train:

    L = L_task(w) + W * (w - w1)^T F (w - w1) + W_lmc * mean_k L_task(w2 + a_k (w - w2))

F is a diagonal Fisher (`--fisher` from `sgmerge fisher`) or the identity. With `--zs-term path`
the quadratic surrogate is replaced by the loss it approximates, W * mean_k L_task(w1 + a_k
(w - w1)) on the training data: for a model whose zero-shot loss is the training task's (the
embedding classifier's prompt head), where the surrogate misses a barrier far from w1's
quadratic basin (benchmarks/RESULTS.md, MERGETUNE on real weights). Mixed precision on
GPU only. When every trainable tensor is the head of a model whose logits are a linear map of
its features (the embedding classifier, the open_clip classifier), the frozen features are
computed once per batch (and, with `--cache-features`, once per run) and the path points only
re-run the head; otherwise each path point is a forward pass with `torch.func.functional_call`
at w2 + a_k (w - w2). The model runs in eval mode (no dropout), so every term sees the same
function. The output is a full checkpoint in the fine-tuned model's layout, so
`sgmerge lmc ZS CONTINUED FT` and `sgmerge interpolate` take it."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.io.tracking import Tracker
from mergekit_sg.models.clip_classifier import HEAD_WEIGHTS, ClipClassifier
from mergekit_sg.models.embedding_classifier import EmbeddingClassifier
from mergekit_sg.tune.core import (
    LOG_FILE,
    BestEpoch,
    GradientStep,
    LogFollower,
    Record,
    StepLog,
    TrainBar,
    adamw,
    amp,
    autocast,
    epoch_batches,
    epoch_lr,
    evaluate_epoch,
    metric_value,
    resolve_device,
    seed_all,
    select_key,
    train_epochs,
    write_run,
)
from mergekit_sg.tune.fisher import load_fisher
from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions, Settings
from mergekit_sg.tune.mergetuning.objective import (
    path_alphas,
    quadratic_penalty,
    weight_path_loss,
)
from mergekit_sg.tune.tasks import StepOutput, Task, build_task
from mergekit_sg.version import TOOLKIT

__all__ = [
    "LOG_FILE",
    "Endpoints",
    "HeadSplit",
    "ObjectiveWeights",
    "WeightResult",
    "head_split",
    "load_endpoint",
    "loss_at",
    "mergetune_weights",
    "weight_objective",
]
SUMMARY_FILE = "mergetune.json"
Params = dict[str, torch.Tensor]


@dataclass
class WeightResult:
    out: Path
    mode: str
    trainable: list[str]
    steps: int
    best_epoch: int | None
    evals: list[dict[str, Any]]
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list, repr=False)


def trainable_names(task: Task, module: torch.nn.Module, trainable: str) -> list[str]:
    """Live parameter names of the head, or those whose live or checkpoint name matches."""
    names = [n for n, _ in module.named_parameters()]
    if trainable == "head":
        picked = [n for n in names if task.is_head(n)]
    else:
        picked = [
            n
            for n in names
            if fnmatch.fnmatchcase(n, trainable)
            or fnmatch.fnmatchcase(task.checkpoint_name(n), trainable)
        ]
    if not picked:
        shown = first_few([task.checkpoint_name(n) for n in names], 4)
        raise SgMergeError(f"--trainable {trainable!r}: matches no parameter (have {shown})")
    return picked


def load_endpoint(task: Task, module: torch.nn.Module, ref: str) -> None:
    """Put a checkpoint written in the task's layout (e.g. the fine-tuned model) into `module`;
    an open_clip classifier's head comes from classifier_head.safetensors beside it."""
    from mergekit_sg.io.reference import resolve

    path = resolve(ref).path
    sources = [open_checkpoint(ref)]
    if path.is_dir() and (path / HEAD_WEIGHTS).exists():
        sources.append(open_checkpoint(path / HEAD_WEIGHTS))
    try:
        state = module.state_dict()
        missing, bad = [], []
        for name, t in state.items():
            key = task.checkpoint_name(name)
            ck = next((c for c in sources if key in c.tensors or key in c.aliases), None)
            if ck is None:
                if t.is_floating_point():
                    missing.append(key)
                continue
            value = ck.read(ck.aliases.get(key, key))
            if value.shape != t.shape:
                bad.append(key)
                continue
            with torch.no_grad():
                t.copy_(value.to(t.dtype))
    finally:
        for c in sources:
            c.close()
    if missing or bad:
        raise SgMergeError(
            f"--finetuned {ref}: does not fit the model: missing {first_few(missing) or 'none'}, "
            f"wrong shape {first_few(bad) or 'none'}"
        )


def fisher_for(path: str | None, task: Task, names: list[str], live: Params) -> Params | None:
    """The Fisher diagonal of each trainable tensor (by checkpoint name), or None (identity)."""
    if not path:
        return None
    values = load_fisher(path)
    out, missing = {}, []
    for n in names:
        key = task.checkpoint_name(n)
        if key not in values:
            missing.append(key)
        elif values[key].shape != live[n].shape:
            raise SgMergeError(f"--fisher {path}: {key} has shape {tuple(values[key].shape)}")
        else:
            out[n] = values[key].to(live[n].device)
    if missing:
        raise SgMergeError(f"--fisher {path}: no values for {first_few(missing)}")
    return out


@dataclass
class HeadSplit:
    """logits = head(features): features of the frozen part, and the head at any weights."""

    features: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    logits: Callable[[torch.Tensor, Params], torch.Tensor]


def head_split(module: torch.nn.Module, names: list[str]) -> HeadSplit | None:
    """The split for models whose logits are a linear head on their features, when the head
    weight is the only trainable tensor; None means a full forward per path point."""
    if names != ["head.weight"]:
        return None
    if isinstance(module, EmbeddingClassifier):
        return HeadSplit(
            lambda b: module.embed(b["input_ids"], b["attention_mask"]),
            lambda f, p: module.scale * F.linear(f, p["head.weight"]),
        )
    if isinstance(module, ClipClassifier):
        return HeadSplit(
            lambda b: module.features(b["images"]), lambda f, p: F.linear(f, p["head.weight"])
        )
    return None


class _Forward(torch.nn.Module):
    """The task's forward as a module call, so `functional_call` can swap any parameters."""

    def __init__(self, task: Task, module: torch.nn.Module) -> None:
        super().__init__()
        self.task = task
        self.inner = module

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self.task.forward(self.inner, batch)


@dataclass
class Endpoints:
    """The trainable tensors at the zero-shot model (w1) and the fine-tuned one (w2), and the
    Fisher diagonal that weights (w - w1) (None: the identity)."""

    w1: Params
    w2: Params
    fisher: Params | None = None


@dataclass(frozen=True)
class ObjectiveWeights:
    """L = main + w_zs * zs + w_lmc * lmc; zs is the quadratic surrogate or the path loss."""

    w_zs: float = 10.0
    w_lmc: float = 1.0
    zs_term: Literal["quadratic", "path"] = "quadratic"


LossAt = Callable[[Params], torch.Tensor]


def loss_at(
    task: Task,
    module: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    split: HeadSplit | None = None,
    feats: torch.Tensor | None = None,
) -> LossAt:
    """The batch's task loss as a function of the trainable tensors: with a head split and the
    batch's frozen `feats` only the head re-runs, else a forward pass of the task with
    `functional_call` at the given tensors."""
    if split is not None and feats is not None:

        def head_loss(p: Params) -> torch.Tensor:
            return task.loss(StepOutput(split.logits(feats, p), batch["labels"], feats))

        return head_loss
    wrapper = _Forward(task, module)

    def full_loss(p: Params) -> torch.Tensor:
        full = {f"inner.{n}": t for n, t in p.items()}
        return task.loss(torch.func.functional_call(wrapper, full, (batch,)))

    return full_loss


def zero_shot_term(
    at: LossAt, w: Params, ends: Endpoints, alphas: list[float], zs_term: str
) -> torch.Tensor:
    """(w - w1)^T F (w - w1), or with zs_term="path" mean_k L(w1 + a_k (w - w1))."""
    if zs_term == "path":
        return weight_path_loss(at, w, ends.w1, alphas)
    return quadratic_penalty(w, ends.w1, ends.fisher)


def weight_objective(
    at: LossAt,
    w: Params,
    ends: Endpoints,
    alphas: list[float],
    weights: ObjectiveWeights,
) -> dict[str, torch.Tensor]:
    """The loss terms on one batch: main = L(w), lmc = mean_k L(w2 + a_k (w - w2)), zs (see
    `zero_shot_term`), loss = main + w_zs * zs + w_lmc * lmc."""
    main = at(w)
    lmc = weight_path_loss(at, w, ends.w2, alphas)
    zs = zero_shot_term(at, w, ends, alphas, weights.zs_term)
    return {
        "loss": main + weights.w_zs * zs + weights.w_lmc * lmc,
        "main": main,
        "zs": zs,
        "lmc": lmc,
    }


@dataclass
class WeightSetup:
    """A weight-mode run ready to train: the task, its model in eval mode, the trainable
    tensors w (live, starting at w2), the endpoints and the head split (or None)."""

    task: Task
    module: torch.nn.Module
    names: list[str]
    w: Params
    ends: Endpoints
    split: HeadSplit | None


def prepare(opts: MergetuneOptions, device: torch.device) -> WeightSetup:
    """Build the task, pick the trainable tensors, read w1 (the pretrained values) and w2 (the
    fine-tuned checkpoint, loaded into the model) and the Fisher; only w trains."""
    task = build_task(opts, device)
    module = task.module.eval()
    names = trainable_names(task, module, opts.trainable)
    live = dict(module.named_parameters())
    w1 = {n: live[n].detach().clone() for n in names}  # the zero-shot model's values
    load_endpoint(task, module, opts.finetuned)
    w2 = {n: live[n].detach().clone() for n in names}
    fisher = fisher_for(opts.fisher, task, names, live)
    module.requires_grad_(False)
    w = {n: live[n].requires_grad_(True) for n in names}
    setup = WeightSetup(
        task, module, names, w, Endpoints(w1, w2, fisher), head_split(module, names)
    )
    check_split(setup, device)
    return setup


def check_split(setup: WeightSetup, device: torch.device) -> None:
    """The head split must reproduce the model's own logits."""
    if setup.split is None:
        return
    task = setup.task
    probe = task.collate([task.features[0]], device)
    with torch.no_grad():
        want = task.forward(setup.module, probe).logits
        got = setup.split.logits(setup.split.features(probe), setup.w)
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise SgMergeError("internal: the head split does not reproduce the model's logits")


def make_optimizer(
    settings: Settings, params: list[torch.Tensor], momentum: float
) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW, at the resolved lr and weight decay."""
    lr, wd = settings.lr, settings.weight_decay
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    return adamw(params, lr, wd)


def config_record(
    opts: MergetuneOptions, settings: Settings, setup: WeightSetup, total: int
) -> Record:
    """The first record of the log: the options, the trainable tensors and the objective."""
    task = setup.task
    zs = "mean_k L(w1 + a_k (w - w1))" if opts.zs_term == "path" else "(w - w1)^T F (w - w1)"
    return {
        "type": "config",
        "command": "mergetune",
        "toolkit": TOOLKIT,
        "options": opts.model_dump(),
        **settings.as_dict(),
        "trainable": [task.checkpoint_name(n) for n in setup.names],
        "trainable_params": sum(p.numel() for p in setup.w.values()),
        "fisher": opts.fisher or "identity",
        "zs_term": opts.zs_term,
        "cached_features": setup.split is not None,
        "objective": "main + w_zs * " + zs + " + w_lmc * lmc",
        "examples": len(task.features),
        "steps": total,
    }


def batch_terms_fn(
    opts: MergetuneOptions, setup: WeightSetup, device: torch.device
) -> Callable[[list[int]], dict[str, torch.Tensor]]:
    """Example indices -> the loss terms of that batch (features from the cache when the head
    split and --cache-features allow; path points on the grid or drawn per step)."""
    task, split = setup.task, setup.split
    cache: dict[int, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(opts.seed)
    grid = path_alphas(opts.num_points)
    weights = ObjectiveWeights(opts.w_zs, opts.w_lmc, opts.zs_term)
    in_amp = autocast(device, amp(device, opts.precision)[0])

    def terms(idx: list[int]) -> dict[str, torch.Tensor]:
        with in_amp():
            batch = task.collate([task.features[i] for i in idx], device)
            feats = None
            if split is not None:
                feats = _features(split, batch, idx, cache if opts.cache_features else None)
            alphas = grid if opts.points == "grid" else path_alphas(opts.num_points, "random", gen)
            at = loss_at(task, setup.module, batch, split, feats)
            return weight_objective(at, setup.w, setup.ends, alphas, weights)

    return terms


def mergetune_weights(
    opts: MergetuneOptions, out: Path, quiet: bool = True, tracker: Tracker | None = None
) -> WeightResult:
    """Head or subset mode of `mergetune`: prepare, train epoch by epoch (keeping the best
    epoch by the first speciality evaluator), write the model, its log and summary (the log
    followed by `tracker`)."""
    from mergekit_sg.evals.registry import build_evaluator

    t0 = time.perf_counter()
    if opts.zs_term == "path" and opts.fisher:
        raise SgMergeError("--fisher weights the quadratic zero-shot term; --zs-term path has none")
    settings = opts.resolved()
    evs: list[Evaluator] = [build_evaluator(s) for s in opts.eval]
    key = select_key(evs)
    device = resolve_device(opts.device)
    seed_all(opts.seed)
    setup = prepare(opts, device)
    task, w = setup.task, setup.w
    optimizer = make_optimizer(settings, list(w.values()), opts.momentum)
    lengths = [task.length(f) for f in task.features]
    total = len(epoch_batches(lengths, opts.batch_size, opts.seed, 0)) * opts.epochs
    log: list[Record] = [config_record(opts, settings, setup, total)]
    tracker = tracker or Tracker()
    follow = LogFollower(tracker)
    follow(log)
    best: BestEpoch[Params] = BestEpoch(higher=key[2] if key else True)

    def evaluate(epoch: int, step: int) -> None:
        if key is None:
            return
        metrics = evaluate_epoch(setup.module, task.loaded, evs)
        log.append({"type": "eval", "epoch": epoch, "step": step, "metrics": metrics})
        best.offer(metric_value(metrics, key), epoch, lambda: _clone(w))

    steps = train_epochs(
        opts.epochs,
        lambda epoch: epoch_batches(lengths, opts.batch_size, opts.seed, epoch),
        batch_terms_fn(opts, setup, device),
        GradientStep(optimizer, list(w.values()), amp(device, opts.precision)[1]),
        lambda e: epoch_lr(e, opts.epochs, settings.lr, settings.warmup_epochs, opts.warmup_lr),
        StepLog(log, opts.log_every, total),
        TrainBar(quiet),
        evaluate,
        lambda: follow(log),
    )
    if best.kept is not None:
        with torch.no_grad():
            for n, t in best.kept.items():
                w[n].copy_(t)
    setup.module.requires_grad_(False)
    seconds = time.perf_counter() - t0
    return _write(opts, settings, setup, out, log, steps, best.epoch, seconds, tracker, follow)


def _clone(w: Params) -> Params:
    return {n: t.detach().clone() for n, t in w.items()}


def _write(
    opts: MergetuneOptions,
    settings: Settings,
    setup: WeightSetup,
    out: Path,
    log: list[Record],
    steps: int,
    best_epoch: int | None,
    seconds: float,
    tracker: Tracker,
    follow: LogFollower,
) -> WeightResult:
    """The model in the fine-tuned checkpoint's layout, the log and the summary, atomically."""
    task = setup.task
    trainable = [task.checkpoint_name(n) for n in setup.names]
    evals = [r for r in log if r["type"] == "eval"]
    log.append({"type": "done", "steps": steps, "best_epoch": best_epoch})
    follow(log)
    summary = {
        "toolkit": TOOLKIT,
        "options": opts.model_dump(),
        **settings.as_dict(),
        "trainable": trainable,
        "pretrained": str(task.path),
        "finetuned": opts.finetuned,
        "best_epoch": best_epoch,
        "evals": evals,
        "seconds": round(seconds, 2),
    }
    save = lambda tmp: task.save(setup.module, tmp)  # noqa: E731
    write_run(out, save, log, SUMMARY_FILE, summary, opts.force, place=tracker.place)
    return WeightResult(out, settings.mode, trainable, steps, best_epoch, evals, seconds, log)


def _features(
    split: HeadSplit,
    batch: dict[str, torch.Tensor],
    idx: list[int],
    cache: dict[int, torch.Tensor] | None,
) -> torch.Tensor:
    """The frozen features of a batch: computed once (per batch, or per run with a cache)."""
    if cache is None:
        with torch.no_grad():
            return split.features(batch)
    todo = [j for j, i in enumerate(idx) if i not in cache]
    if todo:
        sub = {k: v[todo] for k, v in batch.items()}
        with torch.no_grad():
            feats = split.features(sub)
        for j, f in zip(todo, feats, strict=True):
            cache[idx[j]] = f
    return torch.stack([cache[i] for i in idx])
