"""The forgetting mitigation of a run, bound to its model: the frozen pretrained weights theta0
(and the Fisher) for L1/L2/EWC, or the frozen pretrained teacher for distillation. Its value
is unweighted; the loop multiplies by --reg-weight and logs both."""

from __future__ import annotations

import copy
from typing import Any

import torch

import mergekit_sg.tune.finetuning.regularizers as R
from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.tune.finetuning.finetune_options import FinetuneOptions
from mergekit_sg.tune.fisher.store import load_fisher
from mergekit_sg.tune.tasks.base import StepOutput, Task


class Penalty:
    """reg(theta) for one of l1, l2, ewc (against theta0) or kd (against the teacher)."""

    def __init__(self, opts: FinetuneOptions, task: Task, module: torch.nn.Module) -> None:
        self.kind: str = opts.reg
        self.weight = float(opts.reg_weight or 0.0)
        self.reduction: R.Reduction = opts.reg_reduction
        self.temperature = float(opts.kd_temperature)
        self.task = task
        self.teacher: torch.nn.Module | None = None
        self.params: dict[str, torch.nn.Parameter] = {}
        self.ref: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        if self.kind == "kd":
            self.teacher = copy.deepcopy(module).eval().requires_grad_(False)
            return
        trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
        names = R.select_params(trainable, opts.reg_params, task.is_head)
        if not names:
            raise SgMergeError(f"--reg-params {opts.reg_params}: no parameter left to penalise")
        self.params = {n: trainable[n] for n in names}
        self.ref = {n: p.detach().clone() for n, p in self.params.items()}
        if self.kind == "ewc" and opts.fisher:
            self.fisher = self._fisher(opts.fisher)

    def _fisher(self, path: str) -> dict[str, torch.Tensor]:
        stored = load_fisher(path)
        out, missing, bad = {}, [], []
        for n, p in self.params.items():
            key = self.task.checkpoint_name(n)
            f = stored.get(key)
            if f is None:
                missing.append(key)
            elif tuple(f.shape) != tuple(p.shape):
                bad.append(f"{key} {list(f.shape)} vs {list(p.shape)}")
            else:
                out[n] = f.to(p.device)
        if missing or bad:
            what = f"lacks {first_few(missing)}" if missing else f"shape mismatch {first_few(bad)}"
            raise SgMergeError(f"--fisher {path}: {what}; compute it on this model")
        return out

    @property
    def elements(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def describe(self) -> dict[str, Any]:
        """What the log states about the regulariser, so strengths can be compared."""
        d: dict[str, Any] = {"kind": self.kind, "weight": self.weight}
        if self.kind == "kd":
            d.update(temperature=self.temperature, form="T^2 * KL(teacher || student), mean")
        else:
            d.update(reduction=self.reduction, elements=self.elements, tensors=len(self.params))
        return d

    def __call__(self, out: StepOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "kd":
            assert self.teacher is not None
            with torch.no_grad():
                teacher = self.task.forward(self.teacher, batch)
            return R.kd_loss(out.kd_logits, teacher.kd_logits, self.temperature, out.kd_mask)
        if self.kind == "l1":
            return R.l1_penalty(self.params, self.ref, self.reduction)
        if self.kind == "l2":
            return R.l2_penalty(self.params, self.ref, self.reduction)
        return R.ewc_penalty(self.params, self.ref, self.fisher, self.reduction)
