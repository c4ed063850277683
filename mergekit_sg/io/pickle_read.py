"""PyTorch pickles (.bin/.pt/.pth) read safely: only `torch.load(weights_only=True)`, memory-mapped
when the file is in the zip format so tensors stay on disk until touched."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError

# Keys under which training scripts (open_clip, Lightning, timm, ...) nest the weights.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema_state_dict")


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a pickled checkpoint, nested `state_dict` unwrapped; no code ever runs."""
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SgMergeError(
            f"{path}: refused to load: the pickle holds objects other than tensors "
            f"(weights_only=True; {first[:160]}); convert it to safetensors with code you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SgMergeError(f"{path}: not a readable PyTorch checkpoint ({msg[:200]})") from None
    return _find_state_dict(obj, path)


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _find_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return _find_state_dict(obj[key], path)
        if _is_tensor_dict(obj):
            return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise SgMergeError(f"{path}: holds no state dict of tensors (looked under {NESTED_KEYS})")
