"""Where and how a run computes: one seed for every generator, the device, and mixed precision
(autocast on CUDA only; fp32 on the CPU)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Literal

import torch

from mergekit_sg.device import resolve_device as resolve_device
from mergekit_sg.errors import SgMergeError

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def seed_all(seed: int) -> None:
    """Seed Python's, torch's (every device) and numpy's generators with `seed`."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)


def amp(
    device: torch.device, precision: Precision | str
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype or None, GradScaler or None): mixed precision on CUDA only; fp16 gets
    a GradScaler, bf16 needs none."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise SgMergeError(f"--precision {precision} needs a GPU; on CPU training is fp32")
        return None, None
    if precision == "fp32":
        return None, None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> Callable[[], AbstractContextManager[object]]:
    """A factory of the autocast context of a run (a no-op context in fp32)."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
