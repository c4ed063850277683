"""`finetune`: the training loop. Seeded; AdamW with warm-up and a cosine/linear/constant
schedule; gradient accumulation and clipping; mixed precision on GPU only; an optional
forgetting mitigation (L1/L2/EWC towards theta0, distillation from the frozen pretrained model,
or LoRA merged back on save); the scan evaluators after each epoch; the last or the best
epoch's weights; a JSONL log of every loss term with the reduction stated; resumable from its
own state (kept beside OUT until the run completes); the output written atomically."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.io.atomic import atomic_directory, check_destination
from mergekit_sg.io.card import RECIPE_FILE, recipe_text
from mergekit_sg.io.reference import resolve
from mergekit_sg.io.tracking import Tracker, open_tracker
from mergekit_sg.tune.core import (
    LOG_FILE,
    BestEpoch,
    GradientStep,
    SelectKey,
    StepLog,
    TrainBar,
    adamw,
    add_terms,
    amp,
    as_floats,
    autocast,
    cpu_state,
    epoch_batches,
    evaluate_epoch,
    load_state,
    lr_factor,
    metric_value,
    resolve_device,
    save_state,
    seed_all,
    select_key,
    write_run,
    write_trained_card,
)
from mergekit_sg.tune.core.track import LogFollower
from mergekit_sg.tune.finetuning.finetune_options import FinetuneOptions
from mergekit_sg.tune.finetuning.penalty import Penalty
from mergekit_sg.tune.tasks import Task, build_task, make
from mergekit_sg.version import TOOLKIT

__all__ = ["LOG_FILE", "FinetuneResult", "finetune", "state_dir"]
SUMMARY_FILE = "finetune.json"
STATE_FILE = "state.pt"
# Options that do not change the trajectory: a resumed run may differ in these.
NOT_IN_FINGERPRINT = (
    "resume",
    "force",
    "checkpoint_every",
    "save_init",
    "device",
    "log_every",
    "report_to",
    "logging_dir",
    "experiment",
)


@dataclass
class FinetuneResult:
    out: Path
    init: Path | None
    steps: int
    evals: list[dict[str, Any]]  # one record per epoch: {"epoch", "step", "metrics"}
    best_epoch: int | None
    seconds: float
    resumed_at_step: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list, repr=False)
    select: tuple[str, str, bool] | None = None  # (evaluator, metric, higher is better)

    def regression(self) -> str | None:
        """A plain sentence when the saved model scores worse than the model before training
        (epoch 0) on the selection metric; None when it did not, or nothing measured both."""
        if self.select is None:
            return None
        name, metric, higher = self.select
        by_epoch = {r["epoch"]: r["metrics"].get(name, {}).get(metric) for r in self.evals}
        start = by_epoch.get(0)
        end = by_epoch.get(self.best_epoch) if self.best_epoch is not None else None
        if end is None and by_epoch:
            end = by_epoch[max(by_epoch)]
        if start is None or end is None:
            return None
        worse = end < start if higher else end > start
        if not worse:
            return None
        return (
            f"the fine-tune made {name}.{metric} worse: {start:.4f} before training, "
            f"{end:.4f} after (more data, more epochs or a lower --lr may help)"
        )

    def summary(self) -> str:
        """Where the model and its log went: the line the CLI and recipes print at the end."""
        resumed = f", resumed at step {self.resumed_at_step}" if self.resumed_at_step else ""
        return (
            f"fine-tuned -> {self.out} ({self.steps} steps in {self.seconds:.0f} s{resumed}; "
            f"log: {self.out / LOG_FILE})"
        )


@dataclass
class _State:
    """Where the run is: resumable at an optimizer-step boundary."""

    epoch: int = 0
    batch: int = 0  # micro-batches of `epoch` already done
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # loss terms since the last log record
    count: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


def state_dir(out: Path) -> Path:
    """Where an unfinished run keeps its resumable state: beside OUT, hidden."""
    return out.parent / f".{out.name}.sgmerge-train"


def _fingerprint(opts: FinetuneOptions) -> str:
    d = opts.model_dump(exclude=set(NOT_IN_FINGERPRINT))
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _param_groups(params: list[tuple[str, torch.nn.Parameter]], wd: float) -> list[dict]:
    """Weight decay on matrices, none on biases, norms and scalars (the usual AdamW split)."""
    decay = [p for _, p in params if p.dim() >= 2]
    no_decay = [p for _, p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class _Trainer:
    """One run: the model (with its mitigation), the optimizer and schedule, the state."""

    def __init__(self, opts: FinetuneOptions, task: Task, device: torch.device) -> None:
        self.opts, self.task, self.device = opts, task, device
        self.amp_dtype, self.scaler = amp(device, opts.precision)
        module = task.module
        if opts.freeze_head and not opts.lora_rank:
            for n, p in module.named_parameters():
                if task.is_head(n):
                    p.requires_grad_(False)
        self.penalty = Penalty(opts, task, module) if opts.reg != "none" else None
        self.peft_model: torch.nn.Module | None = None
        if opts.lora_rank:
            from mergekit_sg.tune.finetuning.lora import add_lora

            torch.manual_seed(opts.seed)
            targets = (opts.lora_targets or ",".join(task.default_lora_targets)).split(",")
            heads = [] if opts.freeze_head or task.kind == "hf:causal-lm" else task.head_modules()
            self.peft_model = add_lora(
                module,
                opts.lora_rank,
                [t.strip() for t in targets if t.strip()],
                opts.lora_alpha,
                opts.lora_dropout,
                heads,
            )
            module = self.peft_model.get_base_model()  # the model with the adapters injected
        self.module = module.train()
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not self.params:
            raise SgMergeError("nothing to train: every parameter is frozen")
        self.lr = opts.lr or task.default_lr
        self.wd = opts.weight_decay if opts.weight_decay is not None else task.default_weight_decay
        self.optimizer = adamw(_param_groups(self.params, self.wd), self.lr)
        self.lengths = [task.length(f) for f in task.features]
        n_batches = math.ceil(len(self.lengths) / opts.batch_size)
        self.total = math.ceil(n_batches / opts.grad_accum) * opts.epochs
        w = opts.warmup_steps
        self.warmup = w if w is not None else math.ceil(0.05 * self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.warmup, self.total, opts.schedule)
        )
        self.stepper = GradientStep(
            self.optimizer,
            [p for _, p in self.params],
            self.scaler,
            opts.grad_accum,
            opts.grad_clip,
            self.scheduler,
        )
        self.autocast = autocast(device, self.amp_dtype)
        self.st = _State()
        self.steplog = StepLog(self.st.log, opts.log_every, self.total)
        self.best: BestEpoch[dict[str, torch.Tensor]] = BestEpoch()
        self.fingerprint = _fingerprint(opts)

    # ---- state -------------------------------------------------------------------------
    @property
    def trained(self) -> torch.nn.Module:
        """What holds every trained tensor: the peft model under LoRA, else the module."""
        return self.peft_model if self.peft_model is not None else self.module

    def plain_state(self) -> dict[str, torch.Tensor]:
        """The weights as they will be saved (LoRA merged in), on the CPU."""
        if self.peft_model is None:
            return cpu_state(self.module.state_dict())
        from mergekit_sg.tune.finetuning.lora import merged_state_dict

        return cpu_state(merged_state_dict(self.peft_model))

    def save_state(self, sdir: Path) -> None:
        cuda = self.device.type == "cuda"
        st = self.st
        st.sums, st.count = as_floats(self.steplog.sums), self.steplog.count
        st.best_value, st.best_epoch = self.best.value, self.best.epoch
        blob = {
            "fingerprint": self.fingerprint,
            "model": cpu_state(self.trained.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "state": st.__dict__,
            "best": self.best.kept,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
        }
        save_state(sdir / STATE_FILE, blob)

    def restore(self, sdir: Path) -> None:
        saved = load_state(sdir / STATE_FILE)
        if saved["fingerprint"] != self.fingerprint:
            raise SgMergeError(
                f"{sdir}: the saved training state is from different options; "
                "pass --no-resume to start afresh"
            )
        self.trained.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.st = st = _State(**saved["state"])
        self.steplog.log, self.steplog.sums, self.steplog.count = st.log, dict(st.sums), st.count
        self.best = BestEpoch(True, st.best_value, st.best_epoch, saved.get("best"))
        torch.set_rng_state(saved["rng"])
        if self.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])

    def config_record(self) -> dict[str, Any]:
        opts = self.opts
        lora = None
        if opts.lora_rank:
            lora = {"rank": opts.lora_rank, "alpha": opts.lora_alpha or 2 * opts.lora_rank}
        return {
            "type": "config",
            "toolkit": TOOLKIT,
            "options": opts.model_dump(),
            "examples": len(self.lengths),
            "labels": self.task.labels,
            "steps": self.total,
            "warmup_steps": self.warmup,
            "lr": self.lr,
            "weight_decay": self.wd,
            "trainable_params": sum(p.numel() for _, p in self.params),
            "regulariser": self.penalty.describe() if self.penalty else {"kind": "none"},
            "lora": lora,
            "loss": "task + reg_weight * reg",
        }

    # ---- training ----------------------------------------------------------------------
    def micro_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward, loss terms, backward (scaled for accumulation); returns the terms
        (detached tensors: read only when a record is written)."""
        with self.autocast():
            output = self.task.forward(self.module, batch)
            task_loss = self.task.loss(output)
            reg = self.penalty(output, batch) if self.penalty is not None else None
        loss = task_loss if reg is None else task_loss + self.penalty.weight * reg
        self.stepper.backward(loss)
        terms = {"loss": loss.detach(), "task_loss": task_loss.detach()}
        if reg is not None:
            terms["reg_value"] = reg.detach()
            terms["reg_term"] = self.penalty.weight * terms["reg_value"].double()
        return terms

    def log_step(self, epoch: int) -> None:
        """One record: the mean of each loss term over the micro-batches since the last."""
        head: dict[str, Any] = {"type": "step", "step": self.st.step, "epoch": epoch}
        head["lr"] = self.scheduler.get_last_lr()[0]
        tail: dict[str, Any] = {"micro_batches": self.steplog.count}
        if self.penalty is not None:
            tail["reg"] = self.penalty.kind
            tail["reg_weight"] = self.penalty.weight
            if self.penalty.kind != "kd":
                tail["reduction"] = self.penalty.reduction
        self.steplog.flush(head, tail)

    def run_epoch(
        self, epoch: int, bar: TrainBar, sdir: Path, on_step: Callable[[int], None] | None
    ) -> None:
        opts, st, task = self.opts, self.st, self.task
        batches = epoch_batches(
            self.lengths, opts.batch_size, opts.seed, epoch, opts.group_by_length
        )
        micro = 0
        for bi in range(st.batch, len(batches)):
            terms = self.micro_step(
                task.collate([task.features[i] for i in batches[bi]], self.device)
            )
            self.steplog.add(terms)
            micro += 1
            last = bi == len(batches) - 1
            if micro < opts.grad_accum and not last:
                continue
            norm = self.stepper.step()
            if norm is not None:  # counted once per micro-batch, like the loss terms
                add_terms(self.steplog.sums, {"grad_norm": norm * micro})
            micro = 0
            st.step += 1
            st.batch = bi + 1
            bar.advance(terms, epoch + 1, opts.epochs)
            if st.step % opts.log_every == 0 or last:
                self.log_step(epoch)
            if opts.checkpoint_every and st.step % opts.checkpoint_every == 0 and not last:
                self.save_state(sdir)
            if on_step is not None:
                on_step(st.step)
        st.epoch, st.batch = epoch + 1, 0

    def evaluate(self, epoch: int, evs: list[Evaluator], key: SelectKey | None) -> None:
        """Run the evaluators, log them, and keep the best weights when asked."""
        st = self.st
        metrics = evaluate_epoch(self.module, self.task.loaded, evs)
        st.log.append({"type": "eval", "epoch": epoch, "step": st.step, "metrics": metrics})
        if key is None:
            return
        self.best.higher = key[2]
        keep = self.plain_state if self.opts.save == "best" else None
        self.best.offer(metric_value(metrics, key), epoch, keep)

    def final_module(self) -> torch.nn.Module:
        """The plain model to save: adapters merged back, the best weights when asked."""
        plain = self.task.module
        if self.peft_model is not None:
            from mergekit_sg.tune.finetuning.lora import merge_back

            plain = merge_back(self.peft_model)
        if self.opts.save == "best" and self.best.kept is not None:
            plain.load_state_dict(self.best.kept)
        return plain.eval()


def finetune(
    out: str | Path,
    options: FinetuneOptions | None = None,
    evaluators: list[Evaluator] | None = None,
    quiet: bool = True,
    on_step: Callable[[int], None] | None = None,
    recipe_yaml: str | None = None,
    **kwargs: Any,
) -> FinetuneResult:
    """Fine-tune `pretrained` on `data` and write the model to `out` (see FinetuneOptions).

    `on_step(step)` is called after every optimizer step (and after any state save);
    `recipe_yaml`, the recipe that ran it, is written into the outputs as sgmerge_recipe.yaml."""
    from mergekit_sg.evals.registry import build_evaluator

    t0 = time.perf_counter()
    opts: FinetuneOptions = make(FinetuneOptions, options, kwargs)
    opts.check()
    out = Path(out)
    check_destination(out, opts.force)
    sdir = state_dir(out)
    resuming = opts.resume and (sdir / STATE_FILE).exists()
    init_dir = Path(opts.save_init) if opts.save_init else None
    write_init = init_dir is not None and not (resuming and init_dir.exists())
    if write_init:
        check_destination(init_dir, opts.force)
    evs = list(evaluators or []) + [build_evaluator(s) for s in opts.eval]
    if opts.save == "best" and not evs:
        raise SgMergeError("--save best needs at least one --eval")
    key = select_key(evs, opts.select)
    device = resolve_device(opts.device)

    seed_all(opts.seed)
    task = build_task(opts, device)
    # The initial model is rebuilt identically on resume; it is written at the end.
    init_state = cpu_state(task.module.state_dict()) if write_init else None
    tr = _Trainer(opts, task, device)
    resumed_at = None
    if resuming:
        tr.restore(sdir)
        resumed_at = tr.st.step
    else:
        shutil.rmtree(sdir, ignore_errors=True)
        tr.st.log.append(tr.config_record())

    # the trackers' default files are staged with the resumable state, moved into OUT at the end
    tracker = open_tracker(opts, out, "finetune", sdir / "track", True, resumed_at)
    with tracker:
        return _train_and_write(
            tr, opts, evs, key, out, sdir, on_step, quiet, tracker, t0, resumed_at,
            task, init_dir, init_state, recipe_yaml,
        )  # fmt: skip


def _train_and_write(
    tr: _Trainer,
    opts: FinetuneOptions,
    evs: list[Evaluator],
    key: SelectKey | None,
    out: Path,
    sdir: Path,
    on_step: Callable[[int], None] | None,
    quiet: bool,
    tracker: Tracker,
    t0: float,
    resumed_at: int | None,
    task: Task,
    init_dir: Path | None,
    init_state: dict[str, torch.Tensor] | None,
    recipe_yaml: str | None,
) -> FinetuneResult:
    """The epochs (the log followed by the trackers as it grows), then the outputs."""
    follow = LogFollower(tracker, sent=len(tr.st.log) if resumed_at is not None else 0)
    follow(tr.st.log)  # the config record: the run's parameters

    def stepped(step: int) -> None:
        follow(tr.st.log)
        if on_step is not None:
            on_step(step)

    if evs and resumed_at is None:
        tr.evaluate(0, evs, None)  # the starting point, so a fine-tune that hurts is seen
        follow(tr.st.log)
    bar = TrainBar(quiet)
    bar.start(tr.total, tr.st.step)
    try:
        for epoch in range(tr.st.epoch, opts.epochs):
            tr.run_epoch(epoch, bar, sdir, stepped)
            if evs:
                bar.pause()
                tr.evaluate(epoch + 1, evs, key)
                follow(tr.st.log)
                bar.resume()
            if epoch + 1 < opts.epochs:
                tr.save_state(sdir)
    finally:
        bar.stop()

    st = tr.st
    plain = tr.final_module()
    seconds = time.perf_counter() - t0
    done = {
        "type": "done",
        "steps": st.step,
        "saved": opts.save,
        "best_epoch": tr.best.epoch,
        "select": ".".join(key[:2]) if key else None,
        "seconds": round(seconds, 2),
        "resumed_at_step": resumed_at,
    }
    st.log.append(done)
    follow(st.log)
    evals = [r for r in st.log if r["type"] == "eval"]
    summary = {
        "toolkit": TOOLKIT,
        "options": opts.model_dump(),
        "pretrained": str(task.path),
        "examples": len(task.features),
        "labels": task.labels,
        "init": str(init_dir) if init_dir else None,
        "evals": evals,
        **{k: v for k, v in done.items() if k != "type"},
    }
    if recipe_yaml is None:  # a plain CLI or Python run: its recipe, so it can be rerun
        recipe_yaml = recipe_text("finetune", out, opts.model_dump(exclude_defaults=True))
    ref = resolve(opts.pretrained)

    def save_with_card(tmp: Path, what: str) -> None:
        task.save(plain, tmp)
        write_trained_card(tmp, task.path, opts.pretrained, ref.hub_id, what, ["mergekit-sg"])

    write_run(
        out,
        lambda tmp: save_with_card(tmp, f"fine-tuned on {opts.data}"),
        st.log,
        SUMMARY_FILE,
        summary,
        opts.force,
        recipe_yaml,
        place=tracker.place,
    )
    if init_state is not None and init_dir is not None:
        plain.load_state_dict(init_state)  # same keys: the plain model before training
        with atomic_directory(init_dir, opts.force) as tmp:
            save_with_card(tmp, "before fine-tuning (the initial model)")
            if recipe_yaml:
                (tmp / RECIPE_FILE).write_text(recipe_yaml)
    shutil.rmtree(sdir, ignore_errors=True)
    return FinetuneResult(
        out, init_dir, st.step, evals, tr.best.epoch, seconds, resumed_at, log=st.log, select=key
    )
