"""The Ray checks, run by tests/test_ray.py inside a network namespace whose only interface is
loopback (never collected on their own: the file name does not start with test_). One Ray
session (2 CPUs) serves the first checks, a two-node `ray.cluster_utils.Cluster` the last ones:
scans and a prompt benchmark give the local run's records bit for bit, a killed job is
retried, a failing job is reported by name with the others kept, and a rerun after an
interrupted driver evaluates only what was not recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import raykit

if os.environ.get("SGMERGE_RAY_NETNS") != "1" or not raykit.only_loopback():
    pytest.skip("Ray checks run only in a loopback-only network namespace", allow_module_level=True)

import ray

from mergekit_sg.jobs import Job, JobsFailed, Resources, run_jobs
from mergekit_sg.path.run import lmc, scan
from mergekit_sg.ray_jobs import RayExecutor

TESTS = Path(__file__).parent
EVALS = [
    "speciality=python:evalfns:weight_mean",
    "generality=python:evalfns:lm_loss,primary=accuracy",
]
ALPHAS = "0:1:0.25"


def records(out: Path) -> list[dict]:
    """results.jsonl without the wall-clock time, in a fixed order."""
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time")
    return sorted(rows, key=lambda r: (r["path"], r["alpha"], r["evaluator"], r["metric"]))


@pytest.fixture(scope="module")
def pair(llama_pair) -> tuple[Path, Path]:
    return llama_pair["pre_f32"], llama_pair["ft_f32"]


@pytest.fixture(scope="module")
def local(pair, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("local") / "scan"
    rep = scan(*pair, out, model="hf:causal-lm", eval=EVALS, alphas=ALPHAS)
    return out, rep


@pytest.fixture(scope="module")
def one_node():
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": "raykit.setup_worker"},
    )
    yield
    ray.shutdown()


def test_ray_node_is_loopback(one_node) -> None:
    assert "node:127.0.0.1" in ray.cluster_resources()


def test_scan_on_ray_matches_local(one_node, pair, local, tmp_path) -> None:
    out, rep = local
    got = scan(*pair, tmp_path / "s", model="hf:causal-lm", eval=EVALS, alphas=ALPHAS, ray="local")
    assert records(tmp_path / "s") == records(out)
    assert got.result.rows() == rep.result.rows()
    assert got.selection == rep.selection


def test_killed_job_is_retried_and_the_result_unchanged(one_node, pair, local, tmp_path) -> None:
    out, _ = local
    marker = tmp_path / "killed"
    evs = [EVALS[0], f"generality=python:raykit:die_once,marker={marker},primary=accuracy"]
    scan(*pair, tmp_path / "s", model="hf:causal-lm", eval=evs, alphas=ALPHAS, ray="local")
    assert marker.exists()  # a worker was killed mid-job
    assert records(tmp_path / "s") == records(out)


def test_interrupted_driver_resumes_without_redoing(one_node, pair, local, tmp_path) -> None:
    out, _ = local
    rows = (out / "results.jsonl").read_text().splitlines()
    kept = [r for r in rows if json.loads(r)["alpha"] in (0.0, 0.5)]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "results.jsonl").write_text("\n".join(kept) + "\n")  # died after 2 alphas
    log = tmp_path / "calls.log"
    evs = [EVALS[0], f"generality=python:raykit:counted_loss,log={log},primary=accuracy"]
    scan(*pair, tmp_path / "s", model="hf:causal-lm", eval=evs, alphas=ALPHAS, ray="local")
    assert len(log.read_text().splitlines()) == 3  # 0.25, 0.75, 1 only
    assert records(tmp_path / "s") == records(out)


def test_failing_job_is_reported_by_name_and_the_others_kept(one_node) -> None:
    got: dict[str, int] = {}
    jobs = [Job(f"square {i}", raykit.square, {"x": i}) for i in range(3)]
    jobs.insert(1, Job("the bad one", raykit.boom, {"x": 7}))
    with pytest.raises(JobsFailed, match=r"the bad one \(3 attempts\): RuntimeError: boom 7"):
        run_jobs(RayExecutor("local", max_retries=2), jobs, lambda j, v: got.update({j.name: v}))
    assert got == {"square 0": 0, "square 1": 1, "square 2": 4}


def test_soup_on_ray_matches_local(one_node, tmp_path) -> None:
    """`sgmerge soup --ray`: every candidate's and every trial's evaluation a Ray job; the
    same choices, scores and soup bytes as in this process."""
    import torch
    from safetensors.torch import save_file

    from mergekit_sg.path.soup import soup

    cands = []
    for i, w in enumerate([[1.0, 0.0], [0.0, 1.0], [-5.0, -5.0], [1.2, 0.9], [0.8, 1.1]]):
        cands.append(tmp_path / f"c{i}.safetensors")
        save_file({"weight": torch.tensor([w]), "bias": torch.zeros(1)}, cands[-1])
    kw = {"model": "python:evalfns:tiny_linear", "eval": ["held=python:evalfns:closeness"]}
    here = soup(cands, tmp_path / "here", greedy=True, **kw)
    there = soup(cands, tmp_path / "ray", greedy=True, ray="local", **kw)
    assert here.soup is not None and there.soup is not None
    assert there.soup.record() == here.soup.record() and sorted(there.soup.ingredients) == [3, 4]
    assert (tmp_path / "ray" / "model.safetensors").read_bytes() == (
        tmp_path / "here" / "model.safetensors"
    ).read_bytes()


def test_lmc_on_ray_matches_local(one_node, pair, tmp_path) -> None:
    ev = ["loss=python:evalfns:lm_loss"]
    a = lmc(list(pair), tmp_path / "a", model="hf:causal-lm", eval=ev, alphas="0:1:0.5")
    b = lmc(
        list(pair), tmp_path / "b", model="hf:causal-lm", eval=ev, alphas="0:1:0.5", ray="local"
    )
    assert records(tmp_path / "a") == records(tmp_path / "b")
    assert a.barriers == b.barriers


def test_prompt_benchmark_on_ray_matches_local(one_node, tmp_path) -> None:
    import open_clip
    import torch
    from helpers import register_tiny_clip
    from safetensors.torch import save_file
    from test_mergetune import TEMPLATE, _pngs

    from mergekit_sg.tune import PromptBenchmarkOptions, run_benchmark

    name = register_tiny_clip()
    torch.manual_seed(0)
    clip = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "clip.st")
    train, test = _pngs(tmp_path / "train", 6, 0), _pngs(tmp_path / "test", 3, 1)
    opts = {
        "model": f"open_clip:{name}",
        "pretrained": str(tmp_path / "clip.st"),
        "datasets": [
            {"name": "pets", "data": str(train), "test_data": str(test), "zs_template": TEMPLATE}
        ],
        "seeds": [1, 2],
        "shots": 2,
        "coop": {"epochs": 2, "batch_size": 8},
        "mergetune": {"epochs": 1, "batch_size": 8},
        "device": "cpu",
    }
    a = run_benchmark(tmp_path / "a", PromptBenchmarkOptions(**opts))
    b = run_benchmark(tmp_path / "b", PromptBenchmarkOptions(**opts, ray="local"))
    assert a.rows == b.rows and a.summary == b.summary
    assert (tmp_path / "a/results.jsonl").read_text() == (tmp_path / "b/results.jsonl").read_text()
    # a rerun finds every run's scores recorded and runs no job
    scores = tmp_path / "b/pets/seed1/scores.json"
    before = scores.stat().st_mtime_ns
    c = run_benchmark(tmp_path / "b", PromptBenchmarkOptions(**opts, ray="local"))
    assert c.rows == a.rows and scores.stat().st_mtime_ns == before


def test_recipe_file_runs_on_ray(one_node, pair, tmp_path) -> None:
    from test_ray import _two_runs

    from mergekit_sg.commands.run import load_recipes, run_recipes

    recs = load_recipes(_two_runs(tmp_path, *pair))
    res = run_recipes(recs, ray="local")
    assert [r.outputs for r in res] == [[tmp_path / "r1"], [tmp_path / "r2"]]
    ev = ["loss=python:evalfns:lm_loss"]
    lmc(list(pair), tmp_path / "one", model="hf:causal-lm", eval=ev, alphas="0,0.5,1")
    assert records(tmp_path / "r1") == records(tmp_path / "one")
    assert all("already done" in r.lines[0] for r in run_recipes(recs, ray="local"))


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"node_a": 1}, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, resources={"node_b": 1})
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_jobs_run_on_both_nodes(two_nodes) -> None:
    ex = RayExecutor(two_nodes.address)
    jobs = [
        Job(f"on {r}", raykit.node_id, {}, Resources(num_cpus=1, custom={r: 1}))
        for r in ("node_a", "node_b")
    ]
    got: dict[str, str] = {}
    run_jobs(ex, jobs, lambda j, v: got.update({j.name: v}))
    assert len(set(got.values())) == 2
    assert ex.slots(Resources(num_cpus=1)) == 2


def test_scan_on_two_nodes_matches_local(two_nodes, pair, local, tmp_path) -> None:
    out, rep = local
    log = tmp_path / "nodes.log"
    evs = [EVALS[0], f"generality=python:raykit:where_loss,log={log},primary=accuracy"]
    got = scan(*pair, tmp_path / "s", model="hf:causal-lm", eval=evs, alphas=ALPHAS, ray="auto")
    assert records(tmp_path / "s") == records(out)
    assert got.selection == rep.selection
    assert len(set(log.read_text().split())) == 2  # both nodes walked a share
