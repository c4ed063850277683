"""Device names checked before any work: a typo or a GPU that is not there is one clear line at
the start, not a traceback after minutes of reading checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.errors import SgMergeError

if TYPE_CHECKING:
    import torch

KINDS = ("cpu", "cuda", "mps")


def check_device(name: str, flag: str = "--device") -> str:
    """`name` if it is `auto`, `cpu`, or a CUDA/MPS device present on this machine; else one
    SgMergeError saying what exists."""
    shown = f"{flag} {name!r}"
    if name == "auto":
        return name
    if not name or name != name.strip():
        raise SgMergeError(f"{shown}: name a device: cpu, cuda, cuda:N or auto")
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SgMergeError(f"{shown}: not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type not in KINDS:
        raise SgMergeError(f"{shown}: {dev.type} is not supported here; use cpu, cuda[:N] or auto")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SgMergeError(f"{shown}: no CUDA GPU is available here; use cpu or auto")
        if dev.index is not None and dev.index >= n:
            raise SgMergeError(f"{shown}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SgMergeError(f"{shown}: MPS is not available here; use cpu or auto")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise SgMergeError(f"{shown}: there is one cpu device; use cpu")
    return name


def resolve_device(name: str) -> torch.device:
    """The one place `auto` is decided: cuda when a GPU is visible, else cpu (mps is never
    picked by itself); any other name as torch names it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
