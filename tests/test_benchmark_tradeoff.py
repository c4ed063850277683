"""The comparison the forgetting benchmarks print (benchmarks/tradeoff.py): WiSE-FT's upper
envelope at equal or higher speciality, the Pareto front, the 95% interval of a mean accuracy."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tradeoff import (
    compare,
    curves_of,
    generality_ci95,
    pareto_front,
    summary,
    wise_generality_at,
)


def row(method: str, strength: float, spec: float, gen: float) -> dict:
    return {"method": method, "strength": strength, "speciality": spec, "generality": gen}


# the lr 1e-3 SmolLM2 scan of RESULTS.md: speciality peaks at alpha 0.25
WISE = [
    row("wise-ft", 0.0, 0.0303, 0.800),
    row("wise-ft", 0.25, 0.0392, 0.863),
    row("wise-ft", 0.5, 0.0370, 0.820),
    row("wise-ft", 0.75, 0.0315, 0.803),
    row("wise-ft", 1.0, 0.0256, 0.820),
]


def test_envelope_is_best_generality_at_least_as_special() -> None:
    curve = sorted((r["speciality"], r["generality"]) for r in WISE)
    assert wise_generality_at(curve, 0.0370) == 0.863  # alpha 0.25 is more special and better
    assert wise_generality_at(curve, 0.0392) == 0.863  # equal speciality counts
    assert wise_generality_at(curve, 0.0200) == 0.863
    assert wise_generality_at(curve, 0.0393) is None  # beyond every merge


def test_compare_and_summary() -> None:
    rows = [
        row("l2", 1.0, 0.0390, 0.850),
        row("lora", 16, 0.0396, 0.877),
        row("kd", 10, 0.0275, 0.807),
        row("kd", 1, 0.0291, 0.793),
        row("l2", 0.1, 0.0300, 0.900),
    ]
    compare(WISE, rows)
    assert [r["vs_wise"] for r in rows] == pytest.approx([-0.013, None, -0.056, -0.070, 0.037])
    text = summary(rows)
    assert "1 above the WiSE-FT curve" in text and "l2-0.1" in text
    assert "1 more special than every WiSE-FT merge: lora-16" in text
    curves = curves_of(WISE, rows, ["l2", "kd", "lora", "ewc"])
    assert list(curves) == ["wise-ft", "l2", "kd", "lora"]  # no runs, no curve
    # pretrained, the runs by speciality, the fine-tune
    assert [p["strength"] for p in curves["kd"]] == [0.0, 10, 1, 1.0]


def test_pareto_front_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(50):
        pts = [row("x", i, rng.random(), rng.choice([0.1, 0.2, 0.3])) for i in range(8)]
        front = pareto_front(pts)
        for p in pts:
            beaten = any(
                q["speciality"] >= p["speciality"]
                and q["generality"] >= p["generality"]
                and (q["speciality"], q["generality"]) != (p["speciality"], p["generality"])
                for q in pts
            )
            assert (p in front) == (not beaten)
        assert [p["speciality"] for p in front] == sorted(p["speciality"] for p in front)


def test_ci95_of_mean_accuracy() -> None:
    # one task: the binomial interval 1.96 sqrt(p(1-p)/n)
    assert generality_ci95([0.7], [150]) == pytest.approx(1.96 * math.sqrt(0.21 / 150))
    # mean of two independent tasks: var of the mean = (v1 + v2) / 4
    v = 0.7 * 0.3 / 150 + 0.9 * 0.1 / 150
    assert generality_ci95([0.7, 0.9], [150, 150]) == pytest.approx(1.96 * math.sqrt(v) / 2)
    assert generality_ci95([0.7, 0.9], [150, 150]) == pytest.approx(0.0438, abs=5e-5)
    assert generality_ci95([1.0, 0.0], [10, 10]) == 0.0
