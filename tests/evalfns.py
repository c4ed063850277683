"""Evaluators with known answers, for the scan and LMC tests (used as python:evalfns:NAME)."""

from __future__ import annotations

import torch

CALLS = {"n": 0}


def weight_mean(model, key: str = "model.norm.weight") -> dict[str, float]:
    """A metric linear in alpha: the mean of one weight."""
    CALLS["n"] += 1
    return {"value": float(model.module.state_dict()[key].double().mean())}


def lm_loss(model) -> dict[str, float]:
    """Mean next-token cross-entropy of a causal LM on a fixed sequence, and its accuracy."""
    ids = torch.arange(1, 33).remainder(90).unsqueeze(0)
    with torch.inference_mode():
        out = model.module(ids, labels=ids)
        acc = (out.logits[0, :-1].argmax(-1) == ids[0, 1:]).float().mean()
    return {"loss": float(out.loss), "accuracy": float(acc)}


def tiny_linear(path):
    """A python:evalfns:tiny_linear model factory: an nn.Linear from a safetensors file (or a
    folder's model.safetensors) holding `weight` and `bias`."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(path)
    sd = load_file(path if path.is_file() else path / "model.safetensors")
    out_f, in_f = sd["weight"].shape
    module = torch.nn.Linear(in_f, out_f)
    module.load_state_dict(sd)
    return module


def closeness(model) -> dict[str, float]:
    """Higher is better: -||W - 1||^2 - ||b||^2 of a linear model (a held-out score with a
    known optimum at W = 1, b = 0)."""
    w, b = model.module.weight.detach().double(), model.module.bias.detach().double()
    return {"value": float(-((w - 1).pow(2).sum() + b.pow(2).sum()))}
