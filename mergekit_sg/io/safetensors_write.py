"""Streaming safetensors writer: headers are laid out from names, dtypes and shapes before any
data exists, then tensor bytes are written straight to their offsets, in any order and in pieces,
so no shard is ever buffered whole."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.dtypes import itemsize, to_st

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_size(text: str | int) -> int:
    """'5GB' -> 5e9 bytes (decimal units as in transformers; KiB/MiB/GiB binary)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise SgMergeError(f"bad size {text!r}; write e.g. 5GB, 500MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])


@dataclass(frozen=True)
class OutSpec:
    """A tensor to be written: known entirely before its data."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)


@dataclass
class ShardLayout:
    """One output file: its header bytes and each tensor's absolute data offset."""

    filename: str
    header: bytes
    offsets: dict[str, int]
    size: int


def split_shards(specs: list[OutSpec], max_bytes: int) -> list[list[OutSpec]]:
    """Greedy split in the given order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[OutSpec]] = [[]]
    used = 0
    for s in specs:
        if shards[-1] and used + s.nbytes > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(s)
        used += s.nbytes
    return shards


def shard_names(base: str, n: int) -> list[str]:
    if n == 1:
        return [f"{base}.safetensors"]
    return [f"{base}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def layout_shard(filename: str, specs: list[OutSpec], metadata: dict[str, str]) -> ShardLayout:
    """Header and offsets; wider dtypes first (stable) so every tensor is aligned to its size."""
    ordered = sorted(specs, key=lambda s: -itemsize(s.dtype))
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    rel: dict[str, int] = {}
    pos = 0
    for s in ordered:
        header[s.name] = {
            "dtype": to_st(s.dtype),
            "shape": list(s.shape),
            "data_offsets": [pos, pos + s.nbytes],
        }
        rel[s.name] = pos
        pos += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    head = len(raw).to_bytes(8, "little") + raw
    return ShardLayout(filename, head, {k: start + v for k, v in rel.items()}, start + pos)


def plan_files(
    base: str, specs: list[OutSpec], max_bytes: int, metadata: dict[str, str]
) -> list[ShardLayout]:
    groups = split_shards(specs, max_bytes)
    names = shard_names(base, len(groups))
    return [layout_shard(n, g, metadata) for n, g in zip(names, groups, strict=True)]


def index_json(layouts: list[ShardLayout], specs: list[OutSpec], metadata: dict) -> str:
    """The Hugging Face `*.safetensors.index.json` for a sharded output."""
    weight_map = {name: lay.filename for lay in layouts for name in lay.offsets}
    total = sum(s.nbytes for s in specs)
    return json.dumps(
        {
            "metadata": {"total_size": total, **metadata},
            "weight_map": dict(sorted(weight_map.items())),
        },
        indent=2,
    )


class StreamingWriter:
    """Writes pieces of tensors at their offsets into pre-laid-out shard files."""

    def __init__(self, directory: Path, layouts: list[ShardLayout]) -> None:
        self.layouts = layouts
        self._where: dict[str, tuple[int, int]] = {}
        self._fds: list[int] = []
        for i, lay in enumerate(layouts):
            fd = os.open(directory / lay.filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, lay.header, 0)
            os.ftruncate(fd, lay.size)
            for name, off in lay.offsets.items():
                self._where[name] = (i, off)

    def write(self, name: str, data: torch.Tensor, byte_offset: int = 0) -> None:
        """Write `data` (any dtype, contiguous) at `byte_offset` inside tensor `name`."""
        fd_index, base = self._where[name]
        view = memoryview(data.reshape(-1).view(torch.uint8).numpy())
        fd, pos, done = self._fds[fd_index], base + byte_offset, 0
        while done < len(view):
            n = os.pwrite(fd, view[done:], pos + done)
            if n <= 0:
                raise SgMergeError(f"short write to {self.layouts[fd_index].filename} (disk full?)")
            done += n

    def rewrite_headers(self, layouts: list[ShardLayout]) -> None:
        """Replace headers with same-length ones (e.g. placeholder hashes filled in at the end)."""
        for fd, old, new in zip(self._fds, self.layouts, layouts, strict=True):
            if len(old.header) != len(new.header) or old.offsets != new.offsets:
                raise RuntimeError(f"{new.filename}: header layout changed while writing")
            os.pwrite(fd, new.header, 0)
        self.layouts = layouts

    def close(self, sync: bool = True) -> None:
        for fd in self._fds:
            if sync:
                os.fsync(fd)
            os.close(fd)
        self._fds = []
