"""Exact rank selection over a float32 magnitude tensor with bounded scratch memory.

`top_set(w, c)` describes the c largest values of w (ties broken by flat index, lower index
first) as (v, ties): every element > v is in, and the first `ties` elements equal to v. It is
a two-pass radix select on the float32 bit patterns (a non-negative float's int32 bits order
like the float): a 32768-bin histogram of the high 16 bits, then a 65536-bin histogram of the
low 16 bits inside the chosen bin. No sort, no copy of the tensor; scratch is one chunk."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

CHUNK = 1 << 22


@dataclass
class TopSet:
    """The c largest of a tensor: all values > value, plus the first `ties` equal to it.
    `everything`/`nothing` short-cut c = n and c = 0."""

    value: float
    ties: int
    everything: bool = False
    nothing: bool = False
    all_ties: bool = False  # every element equal to `value` is in: no counting needed
    _eq_before: dict[int, int] = field(default_factory=lambda: {0: 0})

    def mask(self, w: torch.Tensor, start: int) -> torch.Tensor:
        """Membership of the chunk w = |d|[start:start+len(w)] (chunks of one tensor must be
        asked for in order the first time; any order afterwards)."""
        if self.everything:
            return torch.ones_like(w, dtype=torch.bool)
        if self.nothing:
            return torch.zeros_like(w, dtype=torch.bool)
        if self.all_ties:
            return w >= self.value
        keep = w > self.value
        eq = w == self.value
        before = self._eq_before[start]
        n_eq = int(torch.count_nonzero(eq))
        self._eq_before.setdefault(start + w.numel(), before + n_eq)
        if n_eq and before < self.ties:
            rank = torch.cumsum(eq, 0, dtype=torch.int64).add_(before)
            keep |= eq & (rank <= self.ties)
        return keep


def _bits(w: torch.Tensor) -> torch.Tensor:
    return w.view(torch.int32)


def top_set(w: torch.Tensor, c: int) -> TopSet:
    """The c largest elements of the flat non-negative float32 tensor w (see module doc)."""
    n = w.numel()
    if c >= n:
        return TopSet(0.0, 0, everything=True)
    if c <= 0:
        return TopSet(0.0, 0, nothing=True)
    hist = torch.zeros(1 << 15, dtype=torch.int64)
    for s in range(0, n, CHUNK):
        hist += torch.bincount(_bits(w[s : s + CHUNK]) >> 16, minlength=1 << 15)[: 1 << 15]
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # count with high >= b
    # the bin b with count(high > b) < c <= count(high >= b)
    b = int(torch.nonzero(above >= c).max())
    greater = int(above[b + 1]) if b + 1 < hist.numel() else 0
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for s in range(0, n, CHUNK):
        bits = _bits(w[s : s + CHUNK])
        sel = bits[(bits >> 16) == b] & 0xFFFF
        if sel.numel():
            low += torch.bincount(sel, minlength=1 << 16)
    above_low = torch.flip(torch.cumsum(torch.flip(low, [0]), 0), [0])
    need = c - greater
    lb = int(torch.nonzero(above_low >= need).max())
    greater += int(above_low[lb + 1]) if lb + 1 < low.numel() else 0
    value = torch.tensor([(b << 16) | lb], dtype=torch.int32).view(torch.float32).item()
    return TopSet(value, c - greater, all_ties=c - greater == int(low[lb]))
