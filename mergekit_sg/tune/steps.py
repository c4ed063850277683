"""Pieces every training loop shares: mixed precision on CUDA only, and one optimizer step."""

from __future__ import annotations

from typing import Any

import torch

from mergekit_sg.errors import SgMergeError


def amp(device: torch.device, precision: str) -> tuple[torch.dtype | None, Any]:
    """(autocast dtype or None, GradScaler or None): mixed precision on CUDA only."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise SgMergeError(f"--precision {precision} needs a GPU; on CPU training is fp32")
        return None, None
    if precision == "fp32":
        return None, None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Any) -> None:
    """Backward and step, through the fp16 GradScaler when there is one."""
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
