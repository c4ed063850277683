"""Exact rank selection over a float32 magnitude tensor with bounded scratch memory.

`top_set(w, c)` describes the c largest values of w (ties broken by flat index, lower index
first) as (v, ties): every element > v is in, and the first `ties` elements equal to v. The
value v is the c-th largest, found by numpy's in-place introselect (`ndarray.partition`, O(n),
no copy: w is the caller's scratch buffer and is left permuted); two counts give `ties`. The
flat index where the kept equal elements end (`cut`) is found lazily by the first in-order
walk of the tensor's chunks, after which a chunk's membership is one comparison per element:
`>= v` before the cut and `> v` from it on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
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
                pos = torch.nonzero(eq).flatten()[self.ties - before - 1]
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
    a.partition(k)  # a[k] is the c-th largest; a[:k] <= a[k] <= a[k:]
    v = a[k]
    greater = int(np.count_nonzero(a[k:] > v))
    n_eq = (c - greater) + int(np.count_nonzero(a[:k] == v))
    return TopSet(float(v), c - greater, all_ties=c - greater == n_eq)
