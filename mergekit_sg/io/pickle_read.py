"""PyTorch pickles (.bin/.pt/.pth) read safely: only `torch.load(weights_only=True)`, memory-mapped
when the file is in the zip format so tensors stay on disk until touched. Only plain dense CPU
tensors are accepted: sparse, meta, quantized or nested tensors are refused in one line.

Given the descriptor the caller holds (`fd`), the file is read through it (`/proc/self/fd/N`
on Linux), so the bytes loaded are those of the file that is hashed for provenance."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError

# Keys under which training scripts (open_clip, Lightning, timm, ...) nest the weights.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema_state_dict")


def _via_fd(path: Path, fd: int | None) -> Path:
    """A path that opens the very file `fd` refers to, where the system has one."""
    if fd is not None and os.path.isdir("/proc/self/fd"):
        return Path(f"/proc/self/fd/{fd}")
    return path


def load_pickle_state_dict(path: Path, fd: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a pickled checkpoint, nested `state_dict` unwrapped; no code ever runs."""
    src = _via_fd(path, fd)
    try:
        mmap = zipfile.is_zipfile(src)
        with warnings.catch_warnings():  # torch's notes on sparse/beta formats: not ours to print
            warnings.simplefilter("ignore")
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SgMergeError(
            f"{path}: refused to load: the pickle holds objects other than tensors "
            f"(weights_only=True; {first[:160]}); convert it to safetensors with code you trust"
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        AttributeError,
        TypeError,
        KeyError,
        IndexError,
    ) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SgMergeError(f"{path}: not a readable PyTorch checkpoint ({msg[:200]})") from None
    state = _find_state_dict(obj, path)
    for name, t in state.items():
        _check_plain(path, name, t)
    return state


def _check_plain(path: Path, name: str, t: torch.Tensor) -> None:
    """A dense, strided CPU tensor with storage, or one line saying what it is instead."""
    if t.layout != torch.strided:
        what = f"a {str(t.layout).removeprefix('torch.')} tensor"
    elif t.is_meta or t.device.type == "meta":
        what = "a meta tensor (shape only, no data)"
    elif t.is_quantized:
        what = "a quantized tensor"
    elif getattr(t, "is_nested", False):
        what = "a nested tensor"
    elif t.device.type != "cpu":
        what = f"a tensor on {t.device}"
    else:
        return
    raise SgMergeError(
        f"{path}: tensor {name!r} is {what}; only dense tensors can be merged "
        "(save it with .to_dense() / real data)"
    )


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
