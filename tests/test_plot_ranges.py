"""Plots do not exaggerate tiny changes: an axis spans at least a fixed width around flat data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mergekit_sg.path.barriers import PathBarrier
from mergekit_sg.path.report import MIN_SPAN, honest_range, write_lmc_outputs
from mergekit_sg.path.run import LmcReport


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=20))
def test_honest_range_is_wide_enough_and_holds_the_data(values: list[float]) -> None:
    span = honest_range(values)
    lo, hi = min(values), max(values)
    if hi - lo >= MIN_SPAN:
        assert span is None  # the data are wide already: autoscale
    else:
        assert span is not None
        assert span[1] - span[0] == pytest.approx(MIN_SPAN)
        assert span[0] <= lo and hi <= span[1]
        assert (span[0] + span[1]) / 2 == pytest.approx((lo + hi) / 2)


def test_a_flat_lmc_path_is_drawn_flat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losses 0.498..0.512 (a 0.014 wiggle) get a y-axis of at least 10% of the loss (0.05)."""
    from matplotlib.figure import Figure

    seen: list[tuple[float, float]] = []
    real = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda self, *a, **k: (seen.append(self.axes[0].get_ylim()), real(self, *a, **k)),
    )
    b = PathBarrier("zero-shot->fine-tuned", [0, 0.5, 1], [0.498, 0.512, 0.50], 0.013, 0.5)
    write_lmc_outputs(LmcReport(paths=[], barriers=[b]), tmp_path)
    ((lo, hi),) = seen
    assert hi - lo == pytest.approx(0.0512, rel=1e-6) and lo <= 0.498 and hi >= 0.512
