"""Exact rank selection over a float32 magnitude tensor with bounded scratch memory.

`top_set(w, c)` describes the c largest values of w (ties broken by flat index, lower index
first) as (v, ties): every element > v is in, and the first `ties` elements equal to v. The
value v is the c-th largest. On a large tensor it is found by a bracket select: the k-th
smallest (k = n - c) of a strided sample of 2**16 values, +- 4 binomial standard deviations
of rank, gives values lo <= hi that bracket v with near certainty; one blockwise pass counts
the elements below lo and above hi and gathers those in [lo, hi] (about 1-3% of them), and
numpy's introselect (`ndarray.partition`) on those gives v exactly, with the counts of
elements > v and == v. When the bracket misses (v outside it, too many candidates, NaN) the
whole buffer is partitioned in place instead (O(n), w is the caller's scratch and is left
permuted). Both give the same (v, ties): the exact k-th smallest and exact counts. The
flat index where the kept equal elements end (`cut`) is found lazily by the first in-order
walk of the tensor's chunks, after which a chunk's membership is one comparison per element:
`>= v` before the cut and `> v` from it on."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch tensors come in, but the selection itself imports no torch
    import torch


@dataclass
class TopSet:
    """The c largest of a tensor: all values > value, plus the first `ties` equal to it.
    `everything`/`nothing` short-cut c = n and c = 0."""

    value: float
    ties: int
    everything: bool = False
    nothing: bool = False
    all_ties: bool = False  # every element equal to `value` is in: no counting needed
    # first flat index from which elements equal to `value` are out (None: not found yet)
    cut: int | None = None
    _eq_before: dict[int, int] = field(default_factory=lambda: {0: 0})

    def __post_init__(self) -> None:
        if self.ties == 0 and self.cut is None:
            self.cut = 0

    def mask_(self, w: torch.Tensor, start: int) -> torch.Tensor:
        """Turn the float32 chunk w = |d|[start:start+len(w)] into its membership, 1.0 or 0.0,
        in place, and return it (before the cut is known, chunks must be asked for in order
        the first time; any order afterwards)."""
        if self.everything:
            return w.fill_(1.0)
        if self.nothing:
            return w.zero_()
        if self.all_ties:
            return w.ge_(self.value)
        n = w.numel()
        if self.cut is None:
            before = self._eq_before[start]
            eq = w.clone().eq_(self.value)  # float 1/0: a bool result is 8x slower on CPU
            n_eq = int(eq.sum())
            if before + n_eq >= self.ties:
                pos = eq.nonzero().flatten()[self.ties - before - 1]
                self.cut = start + int(pos) + 1
                self._eq_before.clear()
            else:
                self._eq_before[start + n] = before + n_eq
                return w.ge_(self.value)
        k = min(n, max(0, self.cut - start))
        w[:k].ge_(self.value)
        w[k:].gt_(self.value)
        return w

    def mask(self, w: torch.Tensor, start: int) -> torch.Tensor:
        """Membership (bool) of the chunk w = |d|[start:start+len(w)]; w is not changed."""
        return self.mask_(w.clone(), start).bool()


# scan(lo, hi, limit) -> (#elements < lo, #elements > hi, values and flat indices in order of
# those in [lo, hi]), or None when more than `limit` elements are in [lo, hi]
BracketScan = Callable[[float, float, int], tuple[int, int, np.ndarray, np.ndarray] | None]

BRACKET_MIN = 1 << 16  # below this many elements, partition the whole buffer
BRACKET_SAMPLE = 1 << 16
BRACKET_BLOCK = 1 << 18


def sample_step(n: int) -> int:
    """The stride of the bracket's sample of a tensor of n elements: elements 0, s, 2s, ..."""
    return max(1, n // BRACKET_SAMPLE)


def _bracket(a: np.ndarray, k: int) -> tuple[float, float]:
    return bracket_of_sample(a[:: sample_step(a.size)].copy(), a.size, k)


# ranks(values, [r0, r1, ...]) -> the values of those ranks (the r-th smallest, 0-based),
# or None where it cannot tell (the caller partitions instead)
Ranks = Callable[[np.ndarray, list[int]], list[float] | None]


def bracket_of_sample(
    sample: np.ndarray, n: int, k: int, ranks: Ranks | None = None
) -> tuple[float, float]:
    """Values lo <= hi that bracket the k-th smallest of n values with near certainty, from
    their strided sample (`sample_step`; partitioned in place): sample quantiles +- 4
    binomial standard deviations of rank (module doc). `ranks` may find the two order
    statistics instead of numpy's partition (the kernels' radix count): the same values."""
    m, p = sample.size, k / n
    margin = 4.0 * math.sqrt(m * p * (1.0 - p)) + 16.0
    i_lo = max(0, math.floor(p * (m - 1) - margin))
    i_hi = min(m - 1, math.ceil(p * (m - 1) + margin))
    if ranks is not None and (got := ranks(sample, [i_lo, i_hi])) is not None:
        return got[0], got[1]
    sample.partition([i_lo, i_hi])  # the two order statistics, not a whole sort
    return sample[i_lo], sample[i_hi]


def _bracket_select(a: np.ndarray, k: int) -> tuple[float, int, int] | None:
    """(v, #elements > v, #elements == v) with v the k-th smallest of a (0-based), from the
    candidates between two sample quantiles (see the module doc); None when the bracket
    misses, holds more than n/16 candidates, or a holds NaN."""
    n = a.size
    lo, hi = _bracket(a, k)
    below = above = found = 0
    limit = max(1 << 12, n >> 4)
    cands = []
    for s in range(0, n, BRACKET_BLOCK):
        b = a[s : s + BRACKET_BLOCK]
        below += int(np.count_nonzero(b < lo))
        above += int(np.count_nonzero(b > hi))
        c = b[(b >= lo) & (b <= hi)]
        found += c.size
        if found > limit:
            return None
        cands.append(c)
    if below + above + found != n or not below <= k < below + found:
        return None  # NaN compares false everywhere; or v outside [lo, hi]
    cand = np.concatenate(cands)
    j = k - below
    cand.partition(j)
    v = cand[j]
    greater = above + int(np.count_nonzero(cand[j:] > v))
    return float(v), greater, int(np.count_nonzero(cand == v))


def top_set(w: torch.Tensor, c: int) -> TopSet:
    """The c largest elements of the flat non-negative float32 tensor w (see module doc);
    w is scratch: it is left permuted."""
    n = w.numel()
    if c >= n:
        return TopSet(0.0, 0, everything=True)
    if c <= 0:
        return TopSet(0.0, 0, nothing=True)
    a = w.numpy()
    k = n - c
    if n >= BRACKET_MIN and (got := _bracket_select(a, k)) is not None:
        v, greater, n_eq = got
        return TopSet(v, c - greater, all_ties=c - greater == n_eq)
    a.partition(k)  # a[k] is the c-th largest; a[:k] <= a[k] <= a[k:]
    v = a[k]
    greater = int(np.count_nonzero(a[k:] > v))
    n_eq = (c - greater) + int(np.count_nonzero(a[:k] == v))
    return TopSet(float(v), c - greater, all_ties=c - greater == n_eq)


def kth_numpy(vals: np.ndarray, j: int) -> tuple[float, int, int]:
    """(v, #vals > v, #vals == v) with v the j-th smallest (0-based) of vals."""
    v = np.partition(vals, j)[j]
    return float(v), int(np.count_nonzero(vals > v)), int(np.count_nonzero(vals == v))


def bracket_limit(n: int) -> int:
    """The most candidates a bracket of n elements may hold before the select gives up on it
    (and the caller partitions): n/16, at least 4096."""
    return max(1 << 12, n >> 4)


def top_set_scan(
    n: int,
    c: int,
    sample: Callable[[], np.ndarray],
    scan: BracketScan,
    kth: Callable[[np.ndarray, int], tuple[float, int, int]] = kth_numpy,
    ranks: Ranks | None = None,
) -> TopSet | None:
    """The c largest of n non-negative float32 values by the bracket select (module doc):
    `sample()` gives their strided sample (`sample_step`, a fresh array) and `scan` does the
    counting and gathering pass (the kernel's one pass instead of numpy's five, over a
    buffer or straight from the inputs); the gathered indices give the cut at once, so the
    chunks can be merged in any order. None where the bracket misses (the caller
    partitions instead). `kth` finds the threshold among the candidates and `ranks` the
    bracket in the sample (numpy's partition, or the kernels' radix count: the same values
    and counts)."""
    if c >= n:
        return TopSet(0.0, 0, everything=True)
    if c <= 0:
        return TopSet(0.0, 0, nothing=True)
    if n < BRACKET_MIN:
        return None
    lo, hi = bracket_of_sample(sample(), n, n - c, ranks)
    return top_set_of_scan(n, c, scan(lo, hi, bracket_limit(n)), kth)


def top_set_of_scan(
    n: int,
    c: int,
    got: tuple[int, int, np.ndarray, np.ndarray] | None,
    kth: Callable[[np.ndarray, int], tuple[float, int, int]] = kth_numpy,
    nth_equal: Callable[[np.ndarray, np.ndarray, float, int], int] | None = None,
) -> TopSet | None:
    """The c largest (0 < c < n) of n values from a bracket scan's result `got` (#below,
    #above, the candidates' values and flat indices in order; see `top_set_scan`), or None
    where the bracket missed. With v the (k - #below)-th smallest candidate (k = n - c),
    the set is every value > v and the first c - #(> v) equal to v; `nth_equal(vals, idx,
    v, r)` gives the flat index of the r-th candidate equal to v (numpy's boolean select
    by default), one past which the kept ties end (the cut)."""
    if got is None:
        return None
    k = n - c
    below, above, vals, idx = got
    found = vals.size
    if found > bracket_limit(n) or below + above + found != n or not below <= k < below + found:
        return None  # NaN is counted nowhere; or v outside [lo, hi]; or too many
    v, more, n_eq = kth(vals, k - below)
    greater = above + more
    ties = c - greater
    if ties == 0:
        cut = 0
    elif ties == n_eq:
        cut = n
    elif nth_equal is not None:
        cut = nth_equal(vals, idx, v, ties - 1) + 1
    else:
        cut = int(idx[vals == v][ties - 1]) + 1
    return TopSet(float(v), ties, all_ties=ties == n_eq, cut=cut)


def resolve_cut(top: TopSet, abs_pieces: Iterator[tuple[int, torch.Tensor]]) -> TopSet:
    """Find `top.cut` by the ordered walk `mask_` does lazily, over (start, |d| piece) pairs
    in order; for a caller that needs it before the first chunk (the fused kernel)."""
    if top.cut is not None or top.everything or top.nothing or top.all_ties:
        return top
    for s, w in abs_pieces:
        top.mask_(w, s)
        if top.cut is not None:
            break
    return top
