"""`sgmerge scan` / `sgmerge lmc` as a user runs them: table, JSONL, CSV, plots, best model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_cli
from PIL import Image

EVALS = [
    "--eval", "speciality=python:evalfns:weight_mean",
    "--eval", "generality=python:evalfns:lm_loss,primary=accuracy",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", here + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_scan_cli_writes_everything(llama_pair, tmp_path: Path) -> None:
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    out, best = tmp_path / "scan", tmp_path / "best"
    res = run_cli(
        "scan", str(pre), str(ft), "--model", "hf:causal-lm", *EVALS, "--alphas", "0:1:0.25",
        "--select", "max-speciality", "-o", str(out), "--write-best", str(best),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "alpha scan" in res.stdout and "selected alpha" in res.stdout
    # off a terminal: one progress line per alpha and evaluator, with where it is and ETA
    assert "scan: alpha 0.25 (2/5), speciality | 2/10 done | elapsed" in res.stderr
    assert "ETA" in res.stderr and "bytes" not in res.stderr
    # an existing --write-best destination fails before the scan, writing nothing
    again = run_cli(
        "scan", str(pre), str(ft), "--model", "hf:causal-lm", *EVALS, "--alphas", "0:1:0.25",
        "-o", str(tmp_path / "scan2"), "--write-best", str(best),
    )  # fmt: skip
    assert again.returncode == 2 and "already exists" in again.stderr
    assert not (tmp_path / "scan2").exists()
    for name in ("results.jsonl", "results.csv", "summary.json", "metrics.png", "tradeoff.png"):
        assert (out / name).stat().st_size > 0, name
    for png in ("metrics.png", "tradeoff.png"):
        assert Image.open(out / png).size[0] > 300
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 5 and summary["rule"] == "max-speciality"
    assert (best / "model.safetensors").exists()
    card = (best / "README.md").read_text()
    assert f"alpha = {summary['selected_alpha']:g}" in card


def test_lmc_cli_three_points(llama_pair, tmp_path: Path) -> None:
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    out = tmp_path / "lmc"
    res = run_cli(
        "lmc", str(pre), str(ft), str(pre), "--model", "hf:causal-lm",
        "--eval", "loss=python:evalfns:lm_loss", "--alphas", "0:1:0.5", "-o", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "lmc.json").read_text())
    assert [b["path"] for b in data["barriers"]] == [
        "zero-shot->continued", "continued->fine-tuned", "zero-shot->fine-tuned",
    ]  # fmt: skip
    assert (out / "lmc.png").stat().st_size > 0 and "barrier" in res.stdout
    # one overall count over the three paths (3 x 3 alphas x 1 evaluator)
    assert "lmc: continued->fine-tuned alpha 0.5 (2/3), loss | 4/9 done" in res.stderr


def test_scan_bad_eval_is_one_line(llama_pair, tmp_path: Path) -> None:
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    res = run_cli("scan", str(pre), str(ft), "--model", "hf:causal-lm", "--eval", "oops",
                  "-o", str(tmp_path / "s"))  # fmt: skip
    assert res.returncode == 2 and "NAME=KIND:ARG" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
