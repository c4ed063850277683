"""The exact top-c selection of the magnitude methods (`select.top_set`): against a stable
sort (value descending, flat index ascending on ties), on tensors with many equal values, the
membership asked chunk by chunk in order and then again out of order (a grid's later outputs)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mergekit_sg.merge.methods.select import top_set


def _reference(w: torch.Tensor, c: int) -> torch.Tensor:
    """Membership of the c largest: stable sort of -w keeps lower indices first on ties."""
    order = torch.sort(-w.double(), stable=True).indices
    keep = torch.zeros(w.numel(), dtype=torch.bool)
    keep[order[:c]] = True
    return keep


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    levels=st.integers(1, 6),
    frac=st.floats(0.0, 1.0),
    chunk=st.integers(1, 97),
    seed=st.integers(0, 2**31 - 1),
)
def test_top_set_matches_stable_sort(n: int, levels: int, frac: float, chunk: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, levels, (n,), generator=g).float().mul_(0.25)  # many ties
    c = round(frac * n)
    ts = top_set(w.clone(), c)  # the argument is scratch: it comes back permuted
    ref = _reference(w, c)
    starts = list(range(0, n, chunk))
    for s in starts + starts[::-1]:  # in order first, then any order
        got = ts.mask(w[s : s + chunk], s)
        assert torch.equal(got, ref[s : s + chunk]), (s, ts)
        f = ts.mask_(w[s : s + chunk].clone(), s)  # the in-place float form agrees
        assert torch.equal(f, ref[s : s + chunk].float())
    assert int(ref.sum()) == c


def test_top_set_nested_prefixes_and_values() -> None:
    """top-c1 is inside top-c2 for c1 < c2 (breadcrumbs subtracts one mask from the other),
    and the threshold is the c-th largest value."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5000, generator=g).abs_().bfloat16().float()  # bfloat16: real ties
    for c1, c2 in [(10, 4000), (2500, 2501), (0, 5000), (4999, 5000)]:
        a, b = top_set(w.clone(), c1), top_set(w.clone(), c2)
        ma, mb = a.mask(w, 0), b.mask(w, 0)
        assert torch.equal(ma & ~mb, torch.zeros_like(ma))
        assert int(ma.sum()) == c1 and int(mb.sum()) == c2
        if 0 < c1 < w.numel():
            assert a.value == float(torch.sort(w, descending=True).values[c1 - 1])


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(2, 3000),
    levels=st.integers(1, 2000),
    frac=st.floats(0.0, 1.0),
    sample=st.sampled_from([4, 64, 1 << 16]),
    nan=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_bracket_select_is_exact_or_declines(n, levels, frac, sample, nan, seed) -> None:
    """The bracket select gives the exact k-th smallest and the exact counts > and == it, as
    a whole-buffer partition does, or declines (None) and the partition is used; top_set's
    answer is the same either way (here with small samples and blocks so that misses,
    candidate overflows and NaN all happen)."""
    import numpy as np

    from mergekit_sg.merge.methods import select

    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, levels, (n,), generator=g).float().mul_(1e-3)
    if nan:
        w[torch.randint(0, n, (1,), generator=g)] = float("nan")
    k = 1 + int(frac * (n - 2))
    old = select.BRACKET_SAMPLE, select.BRACKET_BLOCK, select.BRACKET_MIN
    select.BRACKET_SAMPLE, select.BRACKET_BLOCK, select.BRACKET_MIN = sample, 97, 1
    try:
        got = select._bracket_select(w.numpy().copy(), k)
        ts = top_set(w.clone(), n - k)
    finally:
        select.BRACKET_SAMPLE, select.BRACKET_BLOCK, select.BRACKET_MIN = old
    a = w.numpy().copy()
    a.partition(k)
    v = a[k]
    if got is not None:
        assert not nan or not np.isnan(w.numpy()).any()
        assert got == (float(v), int(np.count_nonzero(a > v)), int(np.count_nonzero(a == v)))
    select.BRACKET_MIN = 1 << 62  # the whole-buffer partition alone
    try:
        want = top_set(w.clone(), n - k)
    finally:
        select.BRACKET_MIN = old[2]
    same = ts.value == want.value or (ts.value != ts.value and want.value != want.value)
    assert same and (ts.ties, ts.all_ties) == (want.ties, want.all_ties)
