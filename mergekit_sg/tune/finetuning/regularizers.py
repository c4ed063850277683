"""Forgetting regularisers as pure functions of tensors: penalties that pull the weights theta
towards a frozen copy of the pretrained weights theta0, and knowledge distillation from the
frozen pretrained model. No I/O, no state; the training loop weights and logs them.

    L1   sum |theta - theta0|
    L2   sum (theta - theta0)^2
    EWC  sum F (theta - theta0)^2        (F: diagonal Fisher, from `sgmerge fisher`)
    KD   T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T)), mean over samples

With reduction "mean" a penalty is divided by the number of parameters it covers, so one
strength means the same on models of different sizes; "sum" is the textbook form."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from mergekit_sg.tune.finetuning.finetune_options import Reduction, RegParams

Named = Mapping[str, torch.Tensor]


def is_norm_or_bias(name: str, tensor: torch.Tensor) -> bool:
    """Biases, normalisation scales and scalars: every parameter with at most one dimension,
    and anything named like a norm."""
    low = name.lower()
    return tensor.dim() <= 1 or "norm" in low or ".ln_" in low or low.startswith("ln_")


def select_params(
    named: Mapping[str, torch.Tensor], mode: RegParams, is_head: Callable[[str], bool]
) -> list[str]:
    """Names a penalty covers: all, all but the task head, or all but norms and biases."""
    if mode == "all":
        return list(named)
    if mode == "no-head":
        return [n for n in named if not is_head(n)]
    return [n for n, t in named.items() if not is_norm_or_bias(n, t)]


def _reduce(total: torch.Tensor, count: int, reduction: Reduction) -> torch.Tensor:
    return total / max(count, 1) if reduction == "mean" else total


def _zero(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    first = next(iter(params.values()), None)
    return torch.zeros((), device=first.device if first is not None else None)


def distance_penalty(
    params: Mapping[str, torch.Tensor],
    ref: Mapping[str, torch.Tensor],
    elementwise: Callable[[str, torch.Tensor], torch.Tensor],
    reduction: Reduction = "sum",
) -> torch.Tensor:
    """sum over the named tensors of elementwise(name, theta - theta0) (float32), or that sum
    divided by the number of parameters covered: the one loop L1, L2 and EWC share."""
    total, count = _zero(params), 0
    for n, p in params.items():
        total = total + elementwise(n, p.float() - ref[n].float()).sum()
        count += p.numel()
    return _reduce(total, count, reduction)


def l1_penalty(params: Named, ref: Named, reduction: Reduction = "sum") -> torch.Tensor:
    """sum over the named tensors of |theta - theta0| (float32), or its mean per parameter."""
    return distance_penalty(params, ref, lambda n, d: d.abs(), reduction)


def l2_penalty(params: Named, ref: Named, reduction: Reduction = "sum") -> torch.Tensor:
    """sum over the named tensors of (theta - theta0)^2 (float32), or its mean per parameter."""
    return distance_penalty(params, ref, lambda n, d: d.square(), reduction)


def ewc_penalty(
    params: Named, ref: Named, fisher: Named, reduction: Reduction = "sum"
) -> torch.Tensor:
    """sum over the named tensors of F * (theta - theta0)^2 (float32), or its mean."""
    return distance_penalty(params, ref, lambda n, d: fisher[n].float() * d.square(), reduction)


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student) at temperature T over the last dimension, averaged over
    the other dimensions (the positions `mask` keeps, for token-level distillation). Zero when
    student equals teacher; the T^2 factor keeps gradient sizes comparable across T."""
    t = temperature
    log_s = F.log_softmax(student.float() / t, dim=-1)
    log_t = F.log_softmax(teacher.detach().float() / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    if mask is not None:
        keep = mask.to(kl.dtype)
        return t * t * (kl * keep).sum() / keep.sum().clamp_min(1.0)
    return t * t * kl.mean()
