"""The exact magnitude top sets of task vectors read in place, with the C kernels and numpy
only (no torch): the bracket select of `select.top_set_scan` over stored tensors mapped from
the page cache, for TIES and breadcrumbs. It imports no torch so that the statistics of a merge
can run while torch is being imported (`merge/early_stats.py`)."""

from __future__ import annotations

import ctypes
from functools import partial
from typing import Any

import numpy as np

from mergekit_sg.merge.methods import native
from mergekit_sg.merge.methods.select import (
    BRACKET_MIN,
    TopSet,
    bracket_limit,
    bracket_of_sample,
    kth_numpy,
    sample_step,
    top_set_of_scan,
)

IDX32_MAX = 2**31 - 1  # tensors up to this size gather int32 flat indices (half the stores)


def first_cap(n: int) -> int:
    """The candidate room of a bracket scan's first pass: n/32 (about twice the expected
    count), at least 4096, at most the limit; a scan that finds more (and no more than the
    limit) is run again with room for them all."""
    return min(bracket_limit(n), max(1 << 12, n >> 5))


def kth_native(lib: Any, vals: np.ndarray, j: int) -> tuple[float, int, int]:
    """select.kth_numpy by the kernels' radix count (the same value and counts)."""
    vals = np.ascontiguousarray(vals, dtype=np.float32)
    v, more, eq = ctypes.c_float(), ctypes.c_int64(), ctypes.c_int64()
    rc = lib.gta_kth(
        vals.ctypes.data, vals.size, j, ctypes.byref(v), ctypes.byref(more), ctypes.byref(eq)
    )
    if rc != 0:
        return kth_numpy(vals, j)
    return v.value, more.value, eq.value


def ranks_native(lib: Any, vals: np.ndarray, ranks: list[int]) -> list[float] | None:
    """The values of the given ranks (0-based, ascending order) of non-negative float32
    values by the kernels' radix count; None where it cannot tell (NaN, no memory), and
    select.py partitions instead: the same values either way (an order statistic is a
    value, whichever method finds it)."""
    vals = np.ascontiguousarray(vals, dtype=np.float32)
    r = np.asarray(ranks, dtype=np.int64)
    got = np.empty(len(ranks), dtype=np.float32)
    if lib.gta_ranks(vals.ctypes.data, vals.size, r.ctypes.data, len(ranks), got.ctypes.data):
        return None
    return list(got)


def nth_equal_native(lib: Any, vals: np.ndarray, idx: np.ndarray, v: float, r: int) -> int:
    """The flat index of the r-th (0-based) candidate equal to v: `idx[vals == v][r]` in
    one pass of the kernels, without the boolean mask and the copy."""
    got = lib.gta_nth_equal(
        vals.ctypes.data, idx.ctypes.data, int(idx.dtype == np.int32), vals.size, v, r
    )
    return int(idx[vals == v][r]) if got < 0 else int(got)


def scan_tops(
    lib: Any,
    base: tuple[np.ndarray, int],
    xs: dict[int, tuple[np.ndarray, int]],
    n: int,
    sizes: dict[int, list[int]],
    arena: Any,
) -> dict[int, list[TopSet | None]]:
    """The magnitude sets (the c largest of |x_i - base| for each c in sizes[i]) of inputs
    read in place (xs: slot -> (stored tensor, kernel dtype code)), by the bracket select of
    `select.top_set_scan` with one read of the base for all of them: the strided samples of
    every input in one pass (gta_absdiff_strided_n), each set's bracket from its sample
    (radix ranks), one pass counting and gathering every set's candidates
    (gta_absdiff_bracket_n: the base converted once per block, |tau| never stored), then each
    threshold and cut from its candidates (`top_set_of_scan`). A set whose bracket misses
    (NaN, too many candidates, v outside it) is None: the caller partitions. The candidate
    buffers come from the arena (reused from tensor to tensor) where there is one."""
    out: dict[int, list[TopSet | None]] = {i: [None] * len(sizes[i]) for i in xs}
    jobs: list[tuple[int, int, int]] = []  # (slot, set, c)
    for i in xs:
        for j, c in enumerate(sizes[i]):
            if c >= n:
                out[i][j] = TopSet(0.0, 0, everything=True)
            elif c <= 0:
                out[i][j] = TopSet(0.0, 0, nothing=True)
            elif n >= BRACKET_MIN:
                jobs.append((i, j, c))
    if not jobs:
        return out
    slots = sorted({i for i, _, _ in jobs})
    row = {i: r for r, i in enumerate(slots)}
    step = sample_step(n)
    m = -(-n // step)
    samples = np.empty((len(slots), m), np.float32)
    lib.gta_absdiff_strided_n(
        base[0].ctypes.data,
        base[1],
        (ctypes.c_void_p * len(slots))(*[xs[i][0].ctypes.data for i in slots]),
        (ctypes.c_int32 * len(slots))(*[xs[i][1] for i in slots]),
        len(slots),
        m,
        step,
        samples.ctypes.data,
    )
    ranks = partial(ranks_native, lib)
    brackets = [bracket_of_sample(samples[row[i]].copy(), n, n - c, ranks) for i, _, c in jobs]
    limit = bracket_limit(n)
    idx_t = np.int32 if n <= IDX32_MAX else np.int64
    isz = np.dtype(idx_t).itemsize

    def scan(which: list[int], caps: list[int], room: Any) -> Any:
        """One pass for the jobs `which`, with candidate room caps; (scan results, buffers)."""
        sc = (native.GtaScan * len(which))()
        bufs = []
        for t, (k, cap) in enumerate(zip(which, caps, strict=True)):
            i = jobs[k][0]
            vals, idx = room(t, cap)
            bufs.append((vals, idx))
            g = sc[t]
            g.x, g.dtype, g.idx32 = xs[i][0].ctypes.data, xs[i][1], int(idx_t is np.int32)
            g.lo, g.hi = brackets[k]
            g.vals, g.idx, g.cap = vals.ctypes.data, idx.ctypes.data, cap
        lib.gta_absdiff_bracket_n(base[0].ctypes.data, base[1], sc, len(which), n)
        return sc, bufs

    cap0 = first_cap(n)
    if arena is not None:  # idx arrays first (aligned), then the values
        space = arena(len(jobs) * cap0 * (isz + 4)).numpy()
        ni = len(jobs) * cap0 * isz

        def room(t: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
            vals = space[ni + t * cap * 4 : ni + (t + 1) * cap * 4].view(np.float32)
            return vals, space[t * cap * isz : (t + 1) * cap * isz].view(idx_t)
    else:

        def room(t: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
            return np.empty(cap, np.float32), np.empty(cap, idx_t)

    def fresh(t: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
        return np.empty(cap, np.float32), np.empty(cap, idx_t)

    which = list(range(len(jobs)))
    sc, bufs = scan(which, [cap0] * len(jobs), room)
    results: dict[int, Any] = {}
    again = []
    for t, k in enumerate(which):
        g = sc[t]
        if g.found > limit:
            results[k] = None
        elif g.found > cap0:  # more than the first guess: once more, room for them all
            again.append((k, g.found))
        else:
            vals, idx = bufs[t]
            results[k] = (g.below, g.above, vals[: g.found], idx[: g.found])
    # the sets from the first pass, before a second pass could need the arena
    nth = partial(nth_equal_native, lib)
    kth = partial(kth_native, lib)
    for k, got in results.items():
        i, j, c = jobs[k]
        out[i][j] = top_set_of_scan(n, c, got, kth, nth)
    if again:
        sc, bufs = scan([k for k, _ in again], [f for _, f in again], fresh)
        for t, (k, f) in enumerate(again):
            g = sc[t]
            vals, idx = bufs[t]
            got = (g.below, g.above, vals[: g.found], idx[: g.found]) if g.found <= f else None
            i, j, c = jobs[k]
            out[i][j] = top_set_of_scan(n, c, got, kth, nth)
    return out
