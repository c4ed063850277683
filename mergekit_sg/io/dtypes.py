"""Safetensors dtype names, torch dtypes and element sizes, in one table."""

from __future__ import annotations

import torch

from mergekit_sg.errors import SgMergeError

ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        ST_TO_TORCH[_name] = getattr(torch, _attr)
TORCH_TO_ST: dict[torch.dtype, str] = {v: k for k, v in ST_TO_TORCH.items()}

# Names a user may give to --dtype / --compute-dtype.
USER_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def from_st(name: str, where: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype string, or an error naming the file."""
    try:
        return ST_TO_TORCH[name]
    except KeyError:
        raise SgMergeError(f"{where}: unsupported safetensors dtype {name!r}") from None


def to_st(dtype: torch.dtype) -> str:
    try:
        return TORCH_TO_ST[dtype]
    except KeyError:
        raise SgMergeError(f"dtype {dtype} cannot be stored in safetensors") from None


def user_dtype(name: str) -> torch.dtype:
    try:
        return USER_DTYPES[name]
    except KeyError:
        raise SgMergeError(
            f"unknown dtype {name!r}; choose one of {', '.join(USER_DTYPES)}"
        ) from None


def itemsize(dtype: torch.dtype) -> int:
    """Bytes per element, from the dtype itself (no tensor is allocated)."""
    return dtype.itemsize
