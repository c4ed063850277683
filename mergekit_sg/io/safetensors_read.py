"""A safetensors file read lazily: the header is parsed and validated at open, tensor bytes are
read on demand, either with pread into caller-owned buffers or in place through one private
mapping of the file (`view_range`), so nothing is copied or cached beyond what is asked for.

Which is cheaper depends on the consumer. Page-faulting bytes through a mapping costs about what
a pread copy of them costs (0.15-0.18 ns a byte each, from the page cache, measured here), so
for one reader neither wins; but a mapping is read in place by every thread that needs the
bytes (a method's statistics pass, then its chunk compute, then the NaN check) with no copy at
all, where pread copies them into a buffer that is then read again. The merge executor maps
(TIES at 1.1B: 14 -> 11 CPU-s); the CUDA path and other formats use pread. A file that shrinks
under a mapping kills the process (SIGBUS) where pread reports a clear error: each view checks
the file's size when it is made, which is the best a mapping can do.

The file is opened once, at open: the header, every tensor byte and the provenance hash
(`sha256`) are all read through that one descriptor, so a file renamed over or deleted during a
run cannot make the recorded hash disagree with the bytes that were merged.

The header is held to the rules the reference `safetensors` library enforces (and a little
more): header length at most 100,000,000 bytes and inside the file, UTF-8 JSON whose first byte
is `{` and that is an object, no name given twice, `__metadata__` a map of strings to strings,
every entry a known dtype, a shape of non-negative integers (not strings, floats or booleans)
and two integer data offsets; the byte ranges, sorted, start at 0, follow each other with no gap
and no overlap, match shape x itemsize, and end exactly at the end of the file."""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import stat
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.dtypes import from_st, itemsize

MAX_HEADER = 100_000_000  # the reference library's MAX_HEADER_SIZE
MAX_DEPTH = 64  # JSON nesting; a valid header is 3 deep, the reference parser stops at 128
MAX_INT = 2**63 - 1  # dims and offsets are u64/usize in the reference; beyond int64 torch fails
METADATA = "__metadata__"


@dataclass(frozen=True)
class StEntry:
    """One tensor of a safetensors file: absolute byte range in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, refused in one line unless it is a regular file (a
    FIFO would hang the read, a directory or device is no checkpoint)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise SgMergeError(f"{path}: is a directory, not a weight file") from None
    except OSError as e:
        raise SgMergeError(f"{path}: cannot open ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SgMergeError(f"{path}: not a regular file (a directory, FIFO or device)")
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return fd


def pread_exact(fd: int, n: int, offset: int) -> bytes:
    """`n` bytes at `offset`, or fewer only where the file ends."""
    parts, done = [], 0
    while done < n:
        chunk = os.pread(fd, n - done, offset + done)
        if not chunk:
            break
        parts.append(chunk)
        done += len(chunk)
    return b"".join(parts)


class SafetensorsFile:
    """Header-parsed safetensors file; `pread_into` reads any byte range of a tensor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None  # made at the first view_range, kept until close
        self._map_failed = False
        self._map_lock = threading.Lock()
        self._fd: int | None = open_regular(path)
        try:
            self.entries, self.metadata, self.header_size = _parse_header(path, self._fd)
        except BaseException:
            self.close()
            raise
        if hasattr(os, "posix_fadvise"):  # reads go front to back: larger readahead
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def fileno(self) -> int:
        if self._fd is None:
            raise SgMergeError(f"{self.path}: read after close")
        return self._fd

    def pread_into(self, offset: int, buf: torch.Tensor) -> torch.Tensor:
        """Fill the uint8 tensor `buf` with the file's bytes from absolute `offset`."""
        view = memoryview(buf.numpy()).cast("B")
        fd, done, total = self.fileno(), 0, len(view)
        while done < total:
            try:
                n = os.preadv(fd, [view[done:]], offset + done)
            except OSError as e:
                raise SgMergeError(f"{self.path}: read failed ({e.strerror or e})") from None
            if n <= 0:
                raise SgMergeError(
                    f"{self.path}: file is truncated (ended while reading tensor data)"
                )
            done += n
        return buf

    def view_range(self, offset: int, nbytes: int) -> np.ndarray | None:
        """A zero-copy uint8 view of the file's bytes [offset, offset + nbytes), for readers
        that use them in place. All views share one copy-on-write private mapping of the whole
        file, made at the first call and kept until `close`: a page faulted in by one thread
        (the statistics pass) is there for the next (the chunk compute), and nothing is
        unmapped while other threads fault (unmaps contend on the address-space lock: a
        mapping per chunk was slower than pread, measured). Private, so a write through a view
        changes a copy, never the file. None when the file is shorter than that now (it changed
        since it was opened) or cannot be mapped; the caller then reads with pread."""
        fd = self.fileno()
        if nbytes <= 0 or offset + nbytes > os.fstat(fd).st_size:
            return None
        mm = self._mapping(fd)
        if mm is None or offset + nbytes > len(mm):
            return None
        return np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=offset)

    def _mapping(self, fd: int) -> mmap.mmap | None:
        with self._map_lock:
            if self._map is None and not self._map_failed:
                try:
                    self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
                except (OSError, ValueError):  # no address space, or overcommit refused it
                    self._map_failed = True
            return self._map

    def populate_range(self, offset: int, nbytes: int) -> None:
        """Fault the mapped pages of [offset, offset + nbytes) in now (MADV_POPULATE_READ,
        Linux 5.14+; elsewhere nothing): a thread with time to spare takes the page faults, so
        the one that then reads the view does not."""
        mm = self._map
        if mm is None or not sys.platform.startswith("linux"):  # 22 is Linux's number
            return
        page = mmap.PAGESIZE
        start = offset // page * page
        end = min(offset + nbytes, len(mm))
        if end > start:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(getattr(mmap, "MADV_POPULATE_READ", 22), start, end - start)

    def drop_range(self, offset: int, nbytes: int) -> None:
        """Let go of the mapped pages of [offset, offset + nbytes) (the whole pages inside it):
        their page-table entries go, the page cache keeps the data, a later view faults them
        in again. Keeps a long merge's resident set to the tensors in flight."""
        mm = self._map
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = -(-offset // page) * page
        end = min(offset + nbytes, len(mm)) // page * page
        if end > start:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def read(self, name: str) -> torch.Tensor:
        e = self.entries[name]
        buf = torch.empty(e.end - e.begin, dtype=torch.uint8)
        self.pread_into(e.begin, buf)
        return buf.view(e.dtype).reshape(e.shape)

    def close(self) -> None:
        mm, self._map = self._map, None
        if mm is not None:
            with contextlib.suppress(BufferError):  # a view still alive keeps it to the end
                mm.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse_header(path: Path, fd: int) -> tuple[dict[str, StEntry], dict[str, str], int]:
    """Read and validate the header through `fd`, without reading tensor data."""
    size = os.fstat(fd).st_size
    bad = f"{path}: not a valid safetensors file"
    head = pread_exact(fd, 8, 0)
    if len(head) < 8:
        raise SgMergeError(f"{bad} (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER:
        raise SgMergeError(f"{bad} (header of {n} bytes; the format's limit is {MAX_HEADER})")
    if n + 8 > size:
        raise SgMergeError(f"{bad} (header length {n} exceeds the file; truncated?)")
    raw = pread_exact(fd, n, 8)
    entries, metadata = parse_header_bytes(raw, size - 8 - n, str(path))
    data_start = 8 + n
    shifted = {
        k: StEntry(e.dtype, e.shape, e.begin + data_start, e.end + data_start)
        for k, e in entries.items()
    }
    return shifted, metadata, data_start


def json_depth(obj: object) -> int:
    """How deeply lists and objects nest in parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in node if isinstance(v, (dict, list)))
    return deepest


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"name {k!r} given twice")
        out[k] = v
    return out


class _Bad(ValueError):
    """A header rule broken; the message says which."""


def _uint(value: object, what: str) -> int:
    """A JSON non-negative integer (a bool, float or string is refused, as in the reference)."""
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise _Bad(f"{what} must be a non-negative integer, not {json.dumps(value)[:40]}")
    return value


def parse_header_bytes(
    raw: bytes, data_size: int, where: str
) -> tuple[dict[str, StEntry], dict[str, str]]:
    """Validate a header (the JSON bytes) against a data region of `data_size` bytes.

    Returns the entries sorted by offset (offsets relative to the data region) and the
    metadata; any broken rule is one SgMergeError naming the file and the rule."""
    bad = f"{where}: not a valid safetensors file"
    if raw[:1] != b"{":
        raise SgMergeError(f"{bad} (header does not start with '{{')")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Bad as e:
        raise SgMergeError(f"{bad} ({e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SgMergeError(f"{bad} (header is not JSON: {e})") from None
    except RecursionError:
        raise SgMergeError(f"{bad} (header JSON is nested too deeply)") from None
    if not isinstance(header, dict):
        raise SgMergeError(f"{bad} (header is not a JSON object)")
    if json_depth(header) > MAX_DEPTH:
        raise SgMergeError(f"{bad} (header JSON is nested too deeply)")
    try:
        metadata = _metadata(header.pop(METADATA, None))
        entries = {name: _entry(name, spec, where) for name, spec in header.items()}
        ordered = dict(sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)))
        _check_layout(ordered, data_size)
    except _Bad as e:
        raise SgMergeError(f"{bad} ({e})") from None
    return ordered, metadata


def _metadata(meta: object) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _Bad(f"{METADATA} must be an object of strings, not {type(meta).__name__}")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise _Bad(f"{METADATA}[{k!r}] must be a string, not {json.dumps(v)[:40]}")
    return dict(meta)


def _entry(name: str, spec: object, where: str) -> StEntry:
    if not isinstance(spec, dict):
        raise _Bad(f"entry {name!r} is not an object")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in spec]
    if missing:
        raise _Bad(f"entry {name!r} has no {missing[0]!r}")
    if not isinstance(spec["dtype"], str):
        raise _Bad(f"entry {name!r}: dtype must be a string")
    dtype = from_st(spec["dtype"], where)
    shape, offsets = spec["shape"], spec["data_offsets"]
    if not isinstance(shape, list):
        raise _Bad(f"entry {name!r}: shape must be a list")
    dims = tuple(_uint(d, f"entry {name!r}: each dimension") for d in shape)
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise _Bad(f"entry {name!r}: data_offsets must be [begin, end]")
    b, e = (_uint(x, f"entry {name!r}: data_offsets") for x in offsets)
    if e < b:
        raise _Bad(f"entry {name!r}: data_offsets end before they begin")
    if e - b != math.prod(dims) * itemsize(dtype):
        raise _Bad(f"tensor {name!r}: byte range does not match its shape and dtype")
    return StEntry(dtype, dims, b, e)


def _check_layout(ordered: dict[str, StEntry], data_size: int) -> None:
    """Byte ranges sorted by offset start at 0, touch end to begin and fill the data region."""
    pos = 0
    for name, e in ordered.items():
        if e.begin > pos:
            raise _Bad(f"gap of {e.begin - pos} bytes before tensor {name!r}")
        if e.begin < pos:
            raise _Bad(f"tensor {name!r} overlaps the tensor before it")
        pos = e.end
    if pos > data_size:
        raise _Bad(f"file is truncated: tensor data ends at byte {pos} of {data_size}")
    if pos < data_size:
        raise _Bad(f"{data_size - pos} bytes after the last tensor")
