"""The I/O floor of a merge, run as its own fresh process: start Python with torch imported,
read every input file once, write K outputs' worth of bytes (the sizes of the fine-tuned
files), and do the same durability work as `sgmerge` (fsync each file and the directory).

`--huge` takes the buffers from 2 MB pages (private anonymous memory marked MADV_HUGEPAGE, as
sgmerge's written buffers are, see mergekit_sg/io/pages.py); without it they are shared
anonymous memory in small pages, like any tool's buffers.

`--writeback plain` leaves the written pages to the kernel (what `cp` or `save_file` do);
`--writeback behind` pushes each 64 MB window to the disk as soon as it is written, waits for
the window before it and drops it from the page cache, as sgmerge's writer does.

Once everything is on disk the floor leaves with `os._exit`, as the `sgmerge` command does:
the interpreter's teardown of torch's modules (0.5-0.9 s here) saves nothing, so it is no
part of a floor (`--teardown` keeps it, as the floors of RESULTS.md's runs before N had it).

    python io_floor.py --out DIR [--k K] [--no-fsync] [--huge] [--writeback plain|behind] \
        [--teardown] --pre FILES... --ft FILES... [--extra FILES...]...
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import sys
from pathlib import Path

import torch  # noqa: F401  (the import is part of the floor: every merge tool pays it)

CHUNK = 16 << 20
WINDOW = 64 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_sfr = _libc.sync_file_range
_sfr.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


class Behind:
    """Write-behind of one file: start writeback per window, finish and drop the previous."""

    def __init__(self, fd: int) -> None:
        self.fd, self.start, self.prev = fd, 0, None

    def wrote(self, end: int, final: bool = False) -> None:
        if end - self.start < WINDOW and not final:
            return
        _sfr(self.fd, self.start, end - self.start, 2)
        todo = [self.prev] + ([(self.start, end)] if final else [])
        for r in todo:
            if r is not None:
                _sfr(self.fd, r[0], r[1] - r[0], 7)
                os.posix_fadvise(self.fd, r[0], r[1] - r[0], os.POSIX_FADV_DONTNEED)
        self.prev, self.start = (None if final else (self.start, end)), end


def _buffer(huge: bool) -> memoryview:
    """A page-aligned CHUNK-byte buffer; on 2 MB pages with `huge` (mergekit_sg.io.pages's
    dma_empty written out here: the floor imports torch and nothing of ours)."""
    if not huge:
        return memoryview(mmap.mmap(-1, CHUNK))
    m = mmap.mmap(-1, CHUNK + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    shift = (-ctypes.addressof(ctypes.c_char.from_buffer(m))) % (2 << 20)
    m.madvise(mmap.MADV_HUGEPAGE, shift, CHUNK)
    return memoryview(m)[shift : shift + CHUNK]


def _pread(fd: int, buf: memoryview, offset: int) -> int:
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n <= 0:
            break
        done += n
    return done


def _pwrite(fd: int, buf: memoryview, offset: int) -> None:
    done = 0
    while done < len(buf):
        done += os.pwrite(fd, buf[done:], offset + done)


def floor(
    pre: list[Path],
    ft: list[Path],
    out: Path,
    k: int,
    fsync: bool,
    mode: str,
    extra: list[list[Path]] | None = None,
    huge: bool = False,
) -> None:
    """Read pre[i] and ft[i] (and each extra[j][i]: more inputs of an N-model merge) once,
    chunk by chunk, writing ft[i]'s bytes to K output files."""
    out.mkdir(parents=True, exist_ok=True)
    va, vb, vx = _buffer(huge), _buffer(huge), _buffer(huge)  # page-aligned, as O_DIRECT needs
    extra = extra or []
    for i, (p, f) in enumerate(zip(pre, ft, strict=True)):
        fa, fb = os.open(p, os.O_RDONLY), os.open(f, os.O_RDONLY)
        fx = [os.open(e[i], os.O_RDONLY) for e in extra]
        paths = [out / f"out{j}-{i}.bin" for j in range(k)]
        outs = [os.open(q, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for q in paths]
        direct = [os.open(q, os.O_WRONLY | os.O_DIRECT) for q in paths] if mode == "direct" else []
        size, off = os.fstat(fb).st_size, 0
        wb = [Behind(o) for o in outs] if mode == "behind" else []
        for o in outs:
            os.ftruncate(o, size)
        while off < size:
            n = _pread(fb, vb, off)
            _pread(fa, va, off)
            for x in fx:
                _pread(x, vx, off)
            aligned = n // 4096 * 4096 if direct else 0
            for j, o in enumerate(outs):
                if aligned:
                    _pwrite(direct[j], vb[:aligned], off)
                if aligned < n:
                    _pwrite(o, vb[aligned:n], off + aligned)
                if wb:
                    wb[j].wrote(off + n)
            off += n
        for j, o in enumerate(outs):
            if fsync:
                if wb:
                    wb[j].wrote(size, final=True)
                os.fsync(o)
            os.close(o)
        for d in direct:
            os.close(d)
        os.close(fa)
        os.close(fb)
        for x in fx:
            os.close(x)
    if fsync:
        fd = os.open(out, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--huge", action="store_true", help="buffers on 2 MB pages")
    ap.add_argument("--writeback", choices=["direct", "behind", "plain"], default="direct")
    ap.add_argument(
        "--teardown", action="store_true", help="exit through the interpreter's teardown"
    )
    ap.add_argument("--pre", type=Path, nargs="+", required=True)
    ap.add_argument("--ft", type=Path, nargs="+", required=True)
    ap.add_argument(
        "--extra", type=Path, nargs="+", action="append", default=[],
        help="the shards of one more input (repeatable), shaped like --ft's",
    )  # fmt: skip
    args = ap.parse_args()
    floor(
        args.pre,
        args.ft,
        args.out,
        args.k,
        not args.no_fsync,
        args.writeback,
        args.extra,
        args.huge,
    )
    if not args.teardown:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
