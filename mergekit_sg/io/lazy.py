"""The lazy checkpoint itself: `TensorInfo` (what is known of a tensor before it is read) and
`Checkpoint` (names, shapes and dtypes at open; bytes read when asked for, in whole or by
element range, and not kept). The readers of each format (io/checkpoint.py for safetensors and
pickles, io/gguf_read.py for GGUF) build these."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mergekit_sg.io.dtypes import itemsize
from mergekit_sg.io.hashing import fd_sha256, file_sha256
from mergekit_sg.io.reference import Resolved
from mergekit_sg.io.safetensors_read import SafetensorsFile


@dataclass(frozen=True)
class TensorInfo:
    """What is known about a tensor before reading it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file_index: int
    offset: int  # absolute byte offset in a safetensors file; -1 for pickles
    raw_name: str
    group: str = ""  # "" for the main weights, else the side weight file they come from

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


@dataclass
class Checkpoint:
    """Lazy view of one checkpoint (single file, sharded directory, pickle or Hub snapshot)."""

    source: Resolved
    format: str
    files: list[Path]
    tensors: dict[str, TensorInfo]
    aliases: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    _st: list[SafetensorsFile | None] = field(default_factory=list, repr=False)
    _pt: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _fds: list[int] = field(default_factory=list, repr=False)  # pickles' open descriptors

    @property
    def ref(self) -> str:
        return self.source.ref

    @property
    def root(self) -> Path:
        """The directory that holds the side files (config, tokenizer, ...)."""
        p = self.source.path
        return p if p.is_dir() else p.parent

    @property
    def side_dir(self) -> Path | None:
        return self.source.path if self.source.path.is_dir() else None

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def kind(self) -> str:
        """'open_clip', 'transformers' or 'torch', from side files and key names."""
        side = self.side_dir
        if side is not None and (side / "open_clip_config.json").exists():
            return "open_clip"
        names = self.tensors.keys()
        if "logit_scale" in names and any(n.startswith("visual.") for n in names):
            return "open_clip"
        if side is not None and (side / "config.json").exists():
            return "transformers"
        return "torch"

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor (a fresh CPU tensor for safetensors, a mapped view for pickles)."""
        info = self.tensors[name]
        if info.offset < 0:
            return self._pt[info.raw_name]
        st = self._st[info.file_index]
        assert st is not None
        return st.read(info.raw_name)

    def read_flat(
        self, name: str, start: int, count: int, scratch: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Elements [start, start+count) of the flat tensor; fills `scratch` (uint8) if given."""
        info = self.tensors[name]
        if info.offset < 0:
            t = self._pt[info.raw_name]
            return t.reshape(-1)[start : start + count]
        st = self._st[info.file_index]
        assert st is not None
        size = itemsize(info.dtype)
        nbytes = count * size
        buf = scratch[:nbytes] if scratch is not None else torch.empty(nbytes, dtype=torch.uint8)
        st.pread_into(info.offset + start * size, buf)
        return buf.view(info.dtype)

    def mapped_flat(self, name: str) -> np.ndarray | None:
        """The stored bytes of the whole tensor as a zero-copy uint8 view of the page cache
        (safetensors only: see `SafetensorsFile.view_range`; None for other formats or when it
        cannot be mapped)."""
        info = self.tensors[name]
        st = self._st_of(info)
        return None if st is None else st.view_range(info.offset, info.nbytes)

    def stored_at(self, name: str) -> tuple[os.stat_result, int, int] | None:
        """Where a tensor's bytes are: the stat of the safetensors file read (through the
        descriptor the data is read from), their absolute offset and length; None for other
        formats."""
        info = self.tensors[name]
        st = self._st_of(info)
        return None if st is None else (os.fstat(st.fileno()), info.offset, info.nbytes)

    def populate_mapped(self, name: str, start: int, count: int) -> None:
        """Fault in the mapped pages of elements [start, start + count) of a tensor
        (`SafetensorsFile.populate_range`)."""
        info = self.tensors[name]
        st = self._st_of(info)
        if st is not None:
            size = itemsize(info.dtype)
            st.populate_range(info.offset + start * size, count * size)

    def drop_mapped(self, name: str) -> None:
        """Let go of the mapped pages of a tensor done with (`SafetensorsFile.drop_range`)."""
        info = self.tensors[name]
        st = self._st_of(info)
        if st is not None:
            st.drop_range(info.offset, info.nbytes)

    def _st_of(self, info: TensorInfo) -> SafetensorsFile | None:
        """The safetensors file a tensor's bytes are in (None: another format)."""
        return self._st[info.file_index] if info.offset >= 0 and self._st else None

    def file_hashes(self) -> dict[str, str]:
        """SHA-256 of every weight file, read through the descriptors the data is read from."""
        out = {}
        for i, p in enumerate(self.files):
            st = self._st[i] if i < len(self._st) else None
            fd = st.fileno() if st is not None else self._fds[i] if i < len(self._fds) else None
            rel = str(p.relative_to(self.root))
            out[rel] = fd_sha256(fd, p) if fd is not None else file_sha256(p)  # other readers
        return out

    def close(self) -> None:
        for st in self._st:
            if st is not None:
                st.close()
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
