"""Output-space ensembles of two live models (WiSE-FT's baseline beside the weight-space path):
the two endpoint models are loaded once and held side by side, and their outputs are mixed with
weight alpha, `f(x) = (1 - alpha) * f_0(x) + alpha * f_1(x)` in the output space each evaluator
kind declares. The mixing rules here are pure tensor math; which one applies is said by each
evaluator kind (`outputs` / `mixed` in evals/). At alpha 0 and 1 every rule returns the endpoint's
own output unchanged, so the ensemble's metrics there are the endpoint model's exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from mergekit_sg.models.adapters import LoadedModel

Mix = Literal["probs", "logits"]
MIXES: tuple[str, ...] = ("probs", "logits")


@dataclass
class ModelPair:
    """The two endpoint models, live at once (twice the memory, two forward passes)."""

    first: LoadedModel  # alpha = 0
    second: LoadedModel  # alpha = 1


def _endpoint(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor | None:
    if alpha == 0.0:
        return a
    if alpha == 1.0:
        return b
    return None


def mix_scores(
    l0: torch.Tensor, l1: torch.Tensor, alpha: float, mix: Mix = "probs"
) -> torch.Tensor:
    """Class scores [..., C] of the ensemble, usable as logits by any metric:

    probs:  log((1 - a) softmax(l0) + a softmax(l1))  (log-probabilities of the mixture, so
            cross-entropy and argmax are the mixture's); one output column is read as a binary
            logit: logit((1 - a) sigmoid(l0) + a sigmoid(l1));
    logits: (1 - a) l0 + a l1."""
    end = _endpoint(l0, l1, alpha)
    if end is not None:
        return end
    a = float(alpha)
    x0, x1 = l0.double(), l1.double()
    if mix == "logits":
        return ((1 - a) * x0 + a * x1).to(l0.dtype)
    if l0.shape[-1] == 1:  # binary: mix the probabilities of the positive class
        p = (1 - a) * torch.sigmoid(x0) + a * torch.sigmoid(x1)
        return torch.logit(p).to(l0.dtype)
    lp = torch.logaddexp(
        math.log(1 - a) + F.log_softmax(x0, dim=-1), math.log(a) + F.log_softmax(x1, dim=-1)
    )
    return lp.to(l0.dtype)


def mix_token_logprobs(lp0: torch.Tensor, lp1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-token log-probabilities of the mixture of two language models' next-token
    distributions at the target tokens: log((1 - a) p0(t) + a p1(t)), in float64."""
    end = _endpoint(lp0, lp1, alpha)
    if end is not None:
        return end
    a = float(alpha)
    return torch.logaddexp(math.log(1 - a) + lp0.double(), math.log(a) + lp1.double())


def mix_embeddings(e0: torch.Tensor, e1: torch.Tensor, alpha: float) -> torch.Tensor:
    """norm((1 - a) norm(e0) + a norm(e1)): normalised embeddings averaged, then renormalised."""
    end = _endpoint(e0, e1, alpha)
    if end is not None:
        return end
    a = float(alpha)
    mixed = (1 - a) * F.normalize(e0.double(), dim=-1) + a * F.normalize(e1.double(), dim=-1)
    return F.normalize(mixed, dim=-1).to(e0.dtype)
