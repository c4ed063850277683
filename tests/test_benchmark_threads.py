"""benchmarks/merge_threads.py: the per-stage times of one in-process merge."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import merge_threads

from mergekit_sg.merge import executor as ex


def test_stage_times_of_a_dare_merge(llama_pair: dict[str, Path], tmp_path: Path) -> None:
    """Every stage is timed, its CPU within the merge's wall (a thread's CPU can not exceed
    its own wall), the scratch output is gone and the executor is as it was."""
    before = {name: getattr(ex._Executor, name) for name in merge_threads.STAGES}
    cfg = {
        "merge_method": "dare_ties",
        "base_model": str(llama_pair["pre_bf16"]),
        "models": [
            {"model": str(llama_pair["ft_bf16"]), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(llama_pair["pre_bf16"]), "parameters": {"weight": 0.5, "density": 0.7}},
        ],
        "dtype": "bfloat16",
    }
    path = tmp_path / "dare.yml"
    path.write_text(yaml.safe_dump(cfg))
    res = merge_threads.measure(path, tmp_path / "out", None)
    assert res["wall"] > 0 and res["cpu"] > 0
    for name in merge_threads.STAGES:
        assert 0 <= res[f"{name} cpu"] <= res[f"{name} wall"] + 0.05
        assert res[f"{name} wall"] <= res["wall"] + 0.05
    assert not (tmp_path / "out").exists()
    assert {name: getattr(ex._Executor, name) for name in merge_threads.STAGES} == before
