"""O_DIRECT write speed by the memory the bytes come from: the same 8 MB writes, interleaved
over 4 files as a grid's writer does, from buffers of three kinds, the kinds alternated:

- `torch.empty`: what the executor's output pool was before io.pages (glibc memory, small
  pages, after the process has allocated and freed some, as a merge has);
- `small pages`: a fresh private mapping marked MADV_NOHUGEPAGE, touched front to back;
- `2 MB pages`: `mergekit_sg.io.pages.dma_empty`, what the output pool and the O_DIRECT
  staging buffer are now.

Each row gives the median time of one 8 MB write and the write rate, and (run as root, where
/proc/self/pagemap shows physical frames) the runs of physically contiguous memory per buffer:
the block layer makes one segment of each run and a request holds at most `max_segments`
(254 on virtio-blk) of them and `max_sectors_kb` bytes.

    .venv/bin/python benchmarks/direct_pages.py [--dir DIR] [--mb-per-file 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import mmap
import os
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mergekit_sg.io.pages import aligned_empty, dma_empty

CHUNK = 8 << 20
K = 4


def _small_pages() -> torch.Tensor:
    m = mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.from_numpy(np.frombuffer(m, dtype=np.uint8))


KINDS: dict[str, Callable[[], torch.Tensor]] = {
    "torch.empty": lambda: aligned_empty(CHUNK, 4096),
    "small pages": _small_pages,
    "2 MB pages": lambda: dma_empty(CHUNK),
}


def physical_runs(t: torch.Tensor) -> int | None:
    """Runs of ascending, physically contiguous 4 KB pages in `t`, or None where the page
    frames are hidden (not root)."""
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(t.data_ptr() // 4096 * 8)
            data = f.read(t.numel() // 4096 * 8)
    except OSError:
        return None
    pfn = [
        struct.unpack_from("<Q", data, 8 * i)[0] & ((1 << 55) - 1) for i in range(len(data) // 8)
    ]
    if not any(pfn):
        return None
    return 1 + sum(1 for a, b in itertools.pairwise(pfn) if b != a + 1)


def run(kind: str, folder: Path, per_file: int) -> tuple[float, float, list[int | None]]:
    """(median ms of one write, MB/s over all writes, physical runs of each buffer)."""
    bufs = [KINDS[kind]() for _ in range(4)]
    for i, b in enumerate(bufs):
        b.fill_(i + 1)  # first touch: the pages are placed now
    views = [memoryview(b.numpy()) for b in bufs]
    paths = [folder / f"pages-{j}.bin" for j in range(K)]
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for p in paths]
    for fd in fds:
        os.ftruncate(fd, per_file)
    direct = [os.open(p, os.O_WRONLY | os.O_DIRECT) for p in paths]
    times, i = [], 0
    t0 = time.perf_counter()
    for off in range(0, per_file, CHUNK):
        for fd in direct:
            a = time.perf_counter()
            os.pwrite(fd, views[i % 4], off)
            times.append(time.perf_counter() - a)
            i += 1
    total = time.perf_counter() - t0
    for fd in fds:
        os.fsync(fd)
    for fd, d, p in zip(fds, direct, paths, strict=True):
        os.close(fd)
        os.close(d)
        p.unlink()
    runs = [physical_runs(b) for b in bufs]
    return statistics.median(times) * 1e3, K * per_file / total / 1e6, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "work")
    ap.add_argument("--mb-per-file", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    churn = [torch.empty(CHUNK, dtype=torch.uint8).fill_(1) for _ in range(40)]
    del churn[::2]  # a merge's allocations come and go: the free list is no longer in order
    per_file = args.mb_per_file << 20
    rows: dict[str, list[tuple[float, float, list[int | None]]]] = {k: [] for k in KINDS}
    for r in range(args.repeats):
        order = list(KINDS) if r % 2 == 0 else list(KINDS)[::-1]
        for kind in order:
            ms, rate, runs = run(kind, args.dir, per_file)
            rows[kind].append((ms, rate, runs))
            print(f"{r + 1}/{args.repeats} {kind:12s} {ms:5.1f} ms/write {rate:6.0f} MB/s "
                  f"physical runs per 8 MB: {runs}", flush=True)  # fmt: skip
    print("\n| buffers | ms per 8 MB write (median) | MB/s (median) | physical runs per 8 MB |")
    print("|---|---:|---:|---|")
    for kind, rs in rows.items():
        runs = sorted({x for _, _, rr in rs for x in rr if x is not None})
        shown = f"{runs[0]}-{runs[-1]}" if runs else "n/a (not root)"
        print(f"| {kind} | {statistics.median(r[0] for r in rs):.1f} | "
              f"{statistics.median(r[1] for r in rs):.0f} | {shown} |")  # fmt: skip


if __name__ == "__main__":
    main()
