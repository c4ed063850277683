"""The paired statistics of benchmarks/llm_paired.py: per-question differences, the exact
McNemar test, the paired bootstrap of a token-level NLL difference, hits and choice losses."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from llm_paired import (
    Z95,
    best_merge_at,
    bootstrap_nll,
    hits_and_losses,
    mcnemar_p,
    mean_se,
    paired_generality,
    point,
)


def test_mcnemar_exact_values() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 10) == 2 / 1024
    assert mcnemar_p(7, 3) == mcnemar_p(3, 7) == 2 * (1 + 10 + 45 + 120) / 1024
    assert mcnemar_p(5, 5) == 1.0  # capped


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_matches_scipy_binomtest(n01: int, n10: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    if n01 + n10 == 0:
        return
    ref = stats.binomtest(min(n01, n10), n01 + n10, 0.5).pvalue
    assert mcnemar_p(n01, n10) == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_paired_generality_against_the_formula() -> None:
    a = {"s": [1, 1, 0, 1, 0, 1], "t": [1, 1, 1, 0]}
    b = {"s": [1, 0, 0, 1, 1, 0], "t": [0, 1, 1, 0]}
    d_s = [0, -1, 0, 0, 1, -1]
    d_t = [-1, 0, 0, 0]

    def var(d: list[int]) -> float:
        m = sum(d) / len(d)
        return sum((x - m) ** 2 for x in d) / (len(d) - 1)

    delta, hw = paired_generality(a, b, ["s", "t"])
    assert delta == pytest.approx((sum(d_s) / 6 + sum(d_t) / 4) / 2, abs=1e-15)
    assert hw == pytest.approx(Z95 * math.sqrt(var(d_s) / 6 + var(d_t) / 4) / 2, rel=1e-12)
    # the same model: no difference, no noise; swapped: the sign flips, the width stays
    assert paired_generality(a, a, ["s", "t"]) == (0.0, 0.0)
    back = paired_generality(b, a, ["s", "t"])
    assert back[0] == pytest.approx(-delta) and back[1] == pytest.approx(hw)


def test_mean_se() -> None:
    m, se = mean_se([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0
    assert se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))


def test_bootstrap_nll() -> None:
    a = [(10.0, 5), (20.0, 10), (6.0, 3), (8.0, 4)]
    same = bootstrap_nll(a, a, reps=200)
    assert same == (0.0, 0.0, 0.0)
    # every chunk 0.5 nats per token better: the difference is -0.5 in every resample
    b = [(s - 0.5 * n, n) for s, n in a]
    d, lo, hi = bootstrap_nll(a, b, reps=200)
    assert d == pytest.approx(-0.5) and lo == pytest.approx(-0.5) and hi == pytest.approx(-0.5)
    # a mixed change: the point estimate is the pooled per-token difference, inside its interval
    c = [(11.0, 5), (18.0, 10), (6.0, 3), (9.0, 4)]
    d, lo, hi = bootstrap_nll(a, c, reps=500)
    assert d == pytest.approx((44.0 - 44.0) / 22)
    assert lo <= d <= hi


def test_hits_and_losses() -> None:
    qs = [
        SimpleNamespace(choices=["x", "y"], answer=1),
        SimpleNamespace(choices=["p", "q", "r"], answer=0),
    ]
    per_token = [
        torch.tensor([-2.0]),
        torch.tensor([-0.5, -0.25]),  # answer of q1: sum -0.75 > -2
        torch.tensor([-3.0]),
        torch.tensor([-1.0]),  # beats the answer of q2
        torch.tensor([-4.0]),
    ]
    hits, losses = hits_and_losses(qs, per_token)
    assert hits == [1, 0]
    s1 = torch.tensor([-2.0, -0.75], dtype=torch.float64)
    s2 = torch.tensor([-3.0, -1.0, -4.0], dtype=torch.float64)
    assert losses[0] == pytest.approx(-float(s1.log_softmax(0)[1]), rel=1e-15)
    assert losses[1] == pytest.approx(-float(s2.log_softmax(0)[0]), rel=1e-15)


def rec(spec_nll: float, sent: list[int], anal: list[int]) -> dict:
    return {
        "speeches": [(spec_nll * 10, 10)],
        "sentiment": {"hits": sent, "loss": [0.0] * len(sent)},
        "analogy": {"hits": anal, "loss": [0.0] * len(anal)},
    }


def test_point_and_the_merge_a_mitigation_is_paired_with() -> None:
    recs = {
        "alpha=0": rec(3.5, [1, 1, 0, 0], [1, 1]),
        "alpha=0.5": rec(3.1, [1, 1, 1, 0], [1, 1]),
        "alpha=1": rec(3.2, [1, 0, 0, 0], [0, 1]),
    }
    spec, gen = point(recs["alpha=0.5"])
    assert spec == pytest.approx(math.exp(-3.1)) and gen == pytest.approx((0.75 + 1.0) / 2)
    # the best-generality merge at least as special (never the pretrained model)
    assert best_merge_at(recs, math.exp(-3.3)) == "alpha=0.5"
    assert best_merge_at(recs, math.exp(-3.15)) == "alpha=0.5"
    assert best_merge_at(recs, math.exp(-3.0)) is None
