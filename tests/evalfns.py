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
