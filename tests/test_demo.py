"""The demo, shortened: real MiniLM, real Rotten Tomatoes, real generality sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergekit_sg.commands import DemoSettings, run_demo
from mergekit_sg.commands.demo import demo_summary


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo"), DemoSettings.tiny(), quiet=True)


def test_demo_shows_the_tradeoff(demo) -> None:
    r = demo.scan.result
    assert [p.alpha for p in r.points] == [0.0, 0.5, 1.0]
    zs, ft = r.at(0.0), r.at(1.0)
    # the zero-shot head already classifies reviews, well above chance (0.5)
    assert zs.metrics["speciality"]["accuracy"] > 0.6
    # alpha=0 is the pretrained encoder: its generality is the real MiniLM's
    assert zs.metrics["generality.lee"]["pearson"] == pytest.approx(0.656, abs=0.01)
    assert zs.metrics["generality.wordsim"]["spearman"] == pytest.approx(0.729, abs=0.01)
    # fine-tuning erodes generality
    assert r.score(ft, "generality") < r.score(zs, "generality")
    assert demo.scan.selection is not None and demo.barrier.path == "pretrained->finetuned"
    # the summary says in words what the numbers say, a worse fine-tune included
    text = " ".join(demo_summary(demo))
    s0, s1 = r.score(zs, "speciality"), r.score(ft, "speciality")
    assert (f"{s0:.3f}" in text) and (f"{s1:.3f}" in text)
    assert ("WORSE" in text) == (s1 < s0)
    assert "barrier" in text


def test_demo_writes_models_plots_and_records(demo) -> None:
    work = Path(demo.finetuned).parent
    for d in ("zeroshot", "finetuned", "best"):
        assert (work / d / "model.safetensors").exists(), d
    for f in ("results.jsonl", "results.csv", "metrics.png", "tradeoff.png", "summary.json"):
        assert (work / "scan" / f).stat().st_size > 0, f
    summary = json.loads((work / "scan/summary.json").read_text())
    assert summary["selected_alpha"] == demo.scan.selection.alpha
    assert "the alpha scan" in (work / "best/README.md").read_text()
