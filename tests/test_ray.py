"""Ray executor checks, run in a network namespace of their own whose only interface is
loopback, so Ray's parts talk over 127.0.0.1 only (left alone, Ray binds to the machine's
external address, which these machines must not do). This test re-executes pytest on
tests/ray_checks.py under `unshare -n` (root); where the namespace cannot be made, it skips and
says why. The local executor needs no Ray and is checked here directly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mergekit_sg.errors import SgMergeError
from mergekit_sg.jobs import (
    Job,
    JobBoard,
    JobsFailed,
    LocalExecutor,
    Resources,
    resources_for,
    run_jobs,
)
from mergekit_sg.path.distributed import deal

TESTS = Path(__file__).parent


def _netns_reason() -> str | None:
    if os.environ.get("SGMERGE_RAY_NETNS") == "1":
        return "already inside the namespace"
    if shutil.which("unshare") is None:
        return "no unshare(1) here (util-linux)"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'mergekit-sg[ray]')"
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot make a network namespace (unshare -n needs root): {r.stderr.strip()}"
    return None


@pytest.mark.timeout(1800)  # 2 cores: 3.3 min at load 5-9, 13 min at load 19
def test_ray_checks_in_a_loopback_only_namespace() -> None:
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "SGMERGE_RAY_NETNS": "1", "OMP_NUM_THREADS": "1"}
    code = "import raykit, sys, pytest; raykit.lo_up(); sys.exit(pytest.main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "-q", "-x", "-p", "no:cacheprovider", "ray_checks.py"]
    r = subprocess.run(
        ["unshare", "-n", *cmd], cwd=TESTS, env=env, capture_output=True, text=True, timeout=1700
    )
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], tail


def test_local_executor_hands_results_over_and_reports_failures() -> None:
    got: dict[str, int] = {}
    calls = {"n": 0}

    def flaky(x: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("transient")
        return x + 1

    def bad() -> int:
        raise RuntimeError("always")

    jobs = [Job("flaky", flaky, {"x": 1}), Job("bad", bad, {}), Job("ok", flaky, {"x": 5})]
    with pytest.raises(JobsFailed, match=r"bad \(3 attempts\): RuntimeError: always") as e:
        run_jobs(LocalExecutor(max_retries=2), jobs, lambda j, v: got.update({j.name: v}))
    assert got == {"flaky": 2, "ok": 6} and "2 done and kept" in str(e.value)


def test_local_executor_does_not_retry_user_errors() -> None:
    calls = {"n": 0}

    def user_error() -> None:
        calls["n"] += 1
        raise SgMergeError("bad option")

    with pytest.raises(SgMergeError, match="bad option"):
        run_jobs(LocalExecutor(), [Job("u", user_error, {})], lambda j, v: None)
    assert calls["n"] == 1


def test_resources_follow_the_device() -> None:
    assert resources_for("cuda:1") == Resources(num_cpus=1, num_gpus=1)
    assert resources_for("auto", cpus=3, gpus_available=True).num_gpus == 1
    assert resources_for("auto", cpus=3) == Resources(num_cpus=3)
    assert resources_for("cpu", cpus=2).threads == 2


def test_deal_splits_alphas_round_robin() -> None:
    alphas = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    shares = deal(alphas, 3)
    assert shares == [[0.0, 0.3, 0.6], [0.1, 0.4], [0.2, 0.5]]
    assert sorted(a for s in shares for a in s) == alphas
    assert deal(alphas[:2], 8) == [[0.0], [0.1]] and deal([], 4) == []


def test_job_board_counts_and_eta() -> None:
    b = JobBoard(4)
    b.update(running=2)
    assert b.eta() is None and "0/4 done, 2 running, 0 failed, ETA ?" in b.line()
    b.t0 -= 10.0  # one job done after 10 s: three to go
    b.update(running=2, done=1)
    assert b.eta() == pytest.approx(30.0, rel=0.01)
    b.update(running=1, failed=1)
    assert "1/4 done, 1 running, 1 failed" in b.line()


def _two_runs(tmp_path: Path, pre: Path, ft: Path) -> Path:
    import yaml

    run = {
        "command": "lmc",
        "inputs": {"a": str(pre), "b": str(ft)},
        "options": {"model": "hf:causal-lm", "eval": ["loss=python:evalfns:lm_loss"]},
    }
    runs = [
        {**run, "out": str(tmp_path / "r1"), "options": {**run["options"], "alphas": "0,0.5,1"}},
        {**run, "out": str(tmp_path / "r2"), "options": {**run["options"], "alphas": "0,0.25,1"}},
    ]
    f = tmp_path / "runs.yaml"
    f.write_text(yaml.safe_dump({"description": "two paths", "runs": runs}))
    return f


def test_recipe_file_with_several_runs(llama_pair, tmp_path: Path, capsys) -> None:
    import json

    from helpers import cli

    from mergekit_sg.path.run import lmc

    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    f = _two_runs(tmp_path, pre, ft)
    r = cli(capsys, "run", str(f))
    assert r.returncode == 0, r.stderr
    assert "A->B: " in r.stdout and "mode-connected" in r.stdout  # the barrier, in words
    assert (tmp_path / "r2" / "sgmerge_recipe.yaml").exists()
    one = lmc(
        [pre, ft],
        tmp_path / "one",
        model="hf:causal-lm",
        eval=["loss=python:evalfns:lm_loss"],
        alphas="0,0.25,1",
    )

    def values(out: Path) -> list[tuple]:
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        return sorted((r["alpha"], r["metric"], r["value"]) for r in rows)

    assert values(tmp_path / "r2") == values(tmp_path / "one") and one.barriers
    again = cli(capsys, "run", str(f))
    assert again.stdout.count("already done") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: []\n")
    r = cli(capsys, "run", str(bad))
    assert r.returncode == 2 and "runs: a non-empty list" in r.stderr
