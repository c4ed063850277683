"""The merge methods by name (mergekit's names where mergekit has the method), the method
protocol, and the C kernels (`native`). The names below are imported on first use (PEP 562):
the kernels and the exact top-k selection (`native`, `select`, `tops`) import without torch,
so a statistics pass can start while torch is still being imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.merge.methods.base import ChunkCtx, Method, Params
    from mergekit_sg.merge.methods.registry import METHODS, get_method

_LAZY = {
    "ChunkCtx": "mergekit_sg.merge.methods.base",
    "Method": "mergekit_sg.merge.methods.base",
    "Params": "mergekit_sg.merge.methods.base",
    "METHODS": "mergekit_sg.merge.methods.registry",
    "get_method": "mergekit_sg.merge.methods.registry",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = ["METHODS", "ChunkCtx", "Method", "Params", "get_method"]
