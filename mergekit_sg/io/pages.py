"""Memory for O_DIRECT writes: buffers backed by transparent huge pages where the kernel has them.

Why: an O_DIRECT write hands the block layer the buffer's physical pages, and a request holds
at most `max_segments` runs of physically contiguous memory (254 on virtio-blk) and
`max_sectors_kb` bytes (4 MB there). Small pages from a recycled free list come in descending
physical order, so no two neighbours merge: an 8 MB write from `torch.empty` memory went out
as 2048 one-page segments, at least nine requests, and took 10 ms; from 2 MB pages it is two
4 MB requests and took 2.5 ms (benchmarks/RESULTS.md, "Huge pages for the written buffers").

How: a private anonymous mapping, 2 MB-aligned inside, its whole 2 MB units marked
MADV_HUGEPAGE, so each is one page when first touched (THP in `madvise` or `always` mode); the
tail past the last whole unit stays in small pages, so the buffer takes no more memory than
`nbytes`. Where the kernel has no THP, or refuses, the buffer is all small pages: nothing else
changes."""

from __future__ import annotations

import contextlib
import mmap

import numpy as np
import torch

HUGE_PAGE = 2 << 20


def aligned_empty(nbytes: int, align: int, pin: bool = False) -> torch.Tensor:
    """A uint8 tensor of `nbytes` whose first byte is `align`-aligned, from torch's allocator
    (pinned with `pin`, for copies to a GPU)."""
    t = torch.empty(nbytes + align, dtype=torch.uint8, pin_memory=pin)
    shift = (-t.data_ptr()) % align
    return t[shift : shift + nbytes]


def dma_empty(nbytes: int, align: int = 4096) -> torch.Tensor:
    """A uint8 CPU tensor of `nbytes` whose first byte is `align`-aligned (align <= 2 MB, a
    power of two), on huge pages where the kernel gives them. The mapping is unmapped when
    the last view of it is gone (the tensor holds the mapping's buffer export)."""
    if align > HUGE_PAGE or align & (align - 1):
        raise ValueError(f"alignment {align} is not a power of two up to {HUGE_PAGE}")
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if not flags or advice is None:  # not Linux: an ordinary aligned allocation
        return aligned_empty(nbytes, align)
    m = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=flags)  # the slack is address space only
    t = torch.from_numpy(np.frombuffer(m, dtype=np.uint8))
    shift = (-t.data_ptr()) % HUGE_PAGE
    if nbytes >= HUGE_PAGE:
        with contextlib.suppress(OSError):  # a kernel without THP: small pages
            m.madvise(advice, shift, nbytes // HUGE_PAGE * HUGE_PAGE)
    return t[shift : shift + nbytes]
