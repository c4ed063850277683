"""The optimizers of the loops. AdamW takes the fused kernel (one pass over all tensors, as
`transformers.Trainer`'s default `adamw_torch_fused`) wherever torch has it: on the CPU the
per-tensor loop costs several times the fused step on a 22M-parameter model
(benchmarks/trainer.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda")


def _tensors(params: Iterable[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for p in params:
        out += list(p["params"]) if isinstance(p, dict) else [p]
    return out


def adamw(params: list[Any], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """torch.optim.AdamW over tensors or parameter groups; fused when every tensor is a float
    on a device the fused kernel supports."""
    tensors = _tensors(params)
    fused = bool(tensors) and all(
        t.device.type in FUSED_DEVICES and t.is_floating_point() for t in tensors
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
