"""A Fisher file: one safetensors file with the checkpoint's tensor names and shapes (float32)
and the run's metadata, written atomically; read back for EWC, MERGETUNE and Fisher-weighted
interpolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io import atomic_file

META_KEY = "sgmerge.fisher"


def save_fisher(
    out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], force: bool = False
) -> None:
    """Write atomically (`io.atomic.atomic_file`): a PID-named temporary file beside `out`,
    fsynced and renamed into place when complete."""
    with atomic_file(out, force) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", META_KEY: json.dumps(meta)})


def load_fisher(path: str | Path) -> dict[str, torch.Tensor]:
    """The Fisher tensors of a file written by `sgmerge fisher`, by checkpoint name."""
    from mergekit_sg.io.checkpoint import open_checkpoint

    p = Path(path)
    if not p.is_file():
        raise SgMergeError(f"--fisher {path}: no such file (make one with sgmerge fisher)")
    with open_checkpoint(p) as ck:
        return {n: ck.read(n).float() for n in ck.tensors}
