"""A safetensors file read lazily: the header is parsed at open, tensor bytes are read on demand
with pread into caller-owned buffers, so nothing is mapped or cached beyond what is asked for.

pread beats mmap here: reading 4 GiB from the page cache into a reused buffer costs ~0.5 s,
page-faulting the same bytes through a mapping costs as much or more, and a file that shrinks
under a mapping kills the process (SIGBUS) where pread reports a clear error."""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.dtypes import from_st, itemsize

MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class StEntry:
    """One tensor of a safetensors file: absolute byte range in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """Header-parsed safetensors file; `pread_into` reads any byte range of a tensor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries, self.metadata, self.header_size = _parse_header(path)
        self._fd: int | None = None

    def _fileno(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):  # reads go front to back: larger readahead
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return self._fd

    def pread_into(self, offset: int, buf: torch.Tensor) -> torch.Tensor:
        """Fill the uint8 tensor `buf` with the file's bytes from absolute `offset`."""
        view = memoryview(buf.numpy()).cast("B")
        fd, done, total = self._fileno(), 0, len(view)
        while done < total:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise SgMergeError(
                    f"{self.path}: file is truncated (ended while reading tensor data)"
                )
            done += n
        return buf

    def read(self, name: str) -> torch.Tensor:
        e = self.entries[name]
        buf = torch.empty(e.end - e.begin, dtype=torch.uint8)
        self.pread_into(e.begin, buf)
        return buf.view(e.dtype).reshape(e.shape)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse_header(path: Path) -> tuple[dict[str, StEntry], dict[str, str], int]:
    """Validate and parse a safetensors header without reading tensor data."""
    size = path.stat().st_size
    bad = f"{path}: not a valid safetensors file"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SgMergeError(f"{bad} (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n + 8 > size:
            raise SgMergeError(f"{bad} (header length {n} exceeds the file; truncated?)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SgMergeError(f"{bad} (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise SgMergeError(f"{bad} (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    entries: dict[str, StEntry] = {}
    for name, spec in header.items():
        try:
            dtype = from_st(spec["dtype"], str(path))
            shape = tuple(int(s) for s in spec["shape"])
            b, e = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SgMergeError(f"{bad} (malformed header entry for {name!r})") from None
        if e - b != math.prod(shape) * itemsize(dtype) or b < 0:
            raise SgMergeError(f"{bad} (tensor {name!r}: byte range does not match its shape)")
        if data_start + e > size:
            raise SgMergeError(f"{path}: file is truncated (tensor {name!r} ends past end of file)")
        entries[name] = StEntry(dtype, shape, data_start + b, data_start + e)
    ordered = dict(sorted(entries.items(), key=lambda kv: kv[1].begin))
    return ordered, {str(k): str(v) for k, v in metadata.items()}, data_start
