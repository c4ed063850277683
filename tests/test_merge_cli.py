"""`sgmerge merge`, `sgmerge soup`, `sgmerge scan --config` and the `merge` / `soup` recipe
commands, in process through the CLI's main(): the outputs against `mergekit_sg.merge`, the
float64 formulas and the greedy rule brute-forced; bad configs are one line and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import assert_refused, cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mergekit_sg import SgMergeError, merge
from mergekit_sg.merge.memory import merged_state_dict

EVAL = ("--model", "python:evalfns:tiny_linear", "--eval", "held=python:evalfns:closeness")


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def _three(root: Path) -> list[Path]:
    g = torch.Generator().manual_seed(7)
    base = {"weight": torch.randn(6, 4, generator=g), "bias": torch.randn(6, generator=g)}
    out = []
    for i in range(3):
        sd = (
            base
            if i == 0
            else {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        )
        out.append(root / f"m{i}.safetensors")
        save_file(sd, out[-1])
    return out


def _ta(paths: list[Path], lam: float = 0.8) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(paths[1]), "parameters": {"weight": 0.7}},
            {"model": str(paths[2]), "parameters": {"weight": -0.4}},
        ],
        "parameters": {"lambda": lam},
    }


def _ties(paths: list[Path]) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(paths[1]), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(paths[2]), "parameters": {"weight": 0.6, "density": 0.7}},
        ],
        "parameters": {"lambda": 0.9},
    }


def _yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_merge_cli_equals_python_and_the_float64_formula(tmp_path: Path, capsys) -> None:
    paths = _three(tmp_path)
    cfg = _yaml(tmp_path / "ta.yml", _ta(paths))
    res = cli(capsys, "merge", str(cfg), "-o", str(tmp_path / "cli"), "-q")
    assert res.returncode == 0, res.stderr
    got = load_file(tmp_path / "cli" / "model.safetensors")
    want = load_file(merge(_ta(paths), tmp_path / "py").out / "model.safetensors")
    sds = [load_file(p) for p in paths]
    for k in want:
        assert torch.equal(got[k], want[k]), k
        b = sds[0][k].double()
        ref = b + 0.8 * (0.7 * (sds[1][k].double() - b) - 0.4 * (sds[2][k].double() - b))
        torch.testing.assert_close(got[k].double(), ref, rtol=1e-6, atol=1e-6)
    card = (tmp_path / "cli" / "README.md").read_text()
    assert "task_arithmetic" in card and all(str(p) in card for p in paths)


def test_param_grid_outputs_equal_single_runs_byte_for_byte(tmp_path: Path, capsys) -> None:
    paths = _three(tmp_path)
    cfg = _yaml(tmp_path / "ties.yml", _ties(paths))
    out = tmp_path / "grid"
    res = cli(capsys, "merge", str(cfg), "-o", str(out), "--param", "lambda=0.3:0.7:0.2", "-q")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "lambda-0.3",
        "lambda-0.5",
        "lambda-0.7",
    ]
    assert json.loads((out / "sgmerge.json").read_text())["outputs"]["lambda-0.5"] == "lambda-0.5"
    for lam in (0.3, 0.5, 0.7):
        one = {**_ties(paths), "parameters": {"lambda": lam}}
        single = cli(capsys, "merge", str(_yaml(tmp_path / f"{lam}.yml", one)), "-o",
                     str(tmp_path / f"one{lam}"), "-q")  # fmt: skip
        assert single.returncode == 0, single.stderr
        a = load_file(out / f"lambda-{lam:g}" / "model.safetensors")
        b = load_file(tmp_path / f"one{lam}" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"merge_method": "frankenmerge"}, ("unknown method", "frankenmerge")),
        ({"slices": [{"sources": []}]}, ("slices",)),
        ({"merge_method": "slerp", "parameters": {"t": 0.5}}, ("slerp", "2 models")),
        ({"models": "DENSITY0"}, ("density",)),
        ({"base_model": None}, ("base_model",)),
    ],
)
def test_bad_configs_are_one_line_status_2(tmp_path: Path, capsys, change: dict, words) -> None:
    paths = _three(tmp_path)
    cfg = {**_ties(paths), **change}
    if change.get("models") == "DENSITY0":
        cfg["models"] = [{"model": str(paths[1]), "parameters": {"weight": 1.0, "density": 0.0}}]
    if cfg["merge_method"] == "slerp":
        cfg["models"] = [{"model": str(p)} for p in paths]
    dest = tmp_path / "out"
    res = cli(capsys, "merge", str(_yaml(tmp_path / "bad.yml", cfg)), "-o", str(dest))
    assert_refused(res, dest, *words)


@pytest.mark.parametrize(
    ("name", "why"), [("missing.yml", "no such file"), ("d.yml", "not a file")]
)
def test_config_that_is_no_file_is_named(tmp_path: Path, capsys, name: str, why: str) -> None:
    """A CONFIG path that is missing or a folder is said to be so (it was parsed as YAML text,
    a bare string, and refused as "expected a mapping"); from Python too."""
    (tmp_path / "d.yml").mkdir()
    dest = tmp_path / "out"
    assert_refused(cli(capsys, "merge", str(tmp_path / name), "-o", str(dest)), dest, name, why)
    with pytest.raises(SgMergeError, match=why):
        merge(tmp_path / name, dest)
    with pytest.raises(SgMergeError, match=why):
        merge(str(tmp_path / name), dest)


def test_param_not_of_the_method_is_refused(tmp_path: Path, capsys) -> None:
    paths = _three(tmp_path)
    dest = tmp_path / "out"
    cfg = _yaml(tmp_path / "ta.yml", _ta(paths))
    assert_refused(cli(capsys, "merge", str(cfg), "-o", str(dest), "--param", "t=0.5"), dest, "t")
    assert_refused(
        cli(capsys, "merge", str(cfg), "-o", str(dest), "--param", "lambda=1:0:1"), dest, "lambda"
    )


def _candidates(root: Path) -> list[Path]:
    ws = [[1.0, 0.0], [0.0, 1.0], [-5.0, -5.0], [1.2, 0.9], [0.8, 1.1]]
    out = []
    for i, w in enumerate(ws):
        out.append(root / f"c{i}.safetensors")
        save_file({"weight": torch.tensor([w]), "bias": torch.zeros(1)}, out[-1])
    return out


def _score(w: torch.Tensor) -> float:
    return -float((w.double() - 1).pow(2).sum())


def test_greedy_soup_keeps_only_improving_candidates(tmp_path: Path, capsys) -> None:
    cands = _candidates(tmp_path)
    out = tmp_path / "soup"
    res = cli(capsys, "soup", *map(str, cands), *EVAL, "--greedy", "-o", str(out))
    assert res.returncode == 0, res.stderr
    ws = [load_file(c)["weight"] for c in cands]
    # the greedy rule brute-forced: rank by score alone (stable), add when the mean improves
    order = sorted(range(len(ws)), key=lambda i: -_score(ws[i]))
    kept, best = [order[0]], _score(ws[order[0]])
    for i in order[1:]:
        s = _score(sum(ws[j].double() for j in [*kept, i]) / (len(kept) + 1))
        if s > best:
            kept, best = [*kept, i], s
    assert sorted(kept) == [3, 4]  # the fixture is built so that exactly these two go in
    got = load_file(out / "model.safetensors")["weight"]
    torch.testing.assert_close(got.double(), sum(ws[j].double() for j in kept) / len(kept))
    card = (out / "README.md").read_text()
    assert card.count("| yes |") == 2 and card.count("| no |") == 3
    with safe_open(out / "model.safetensors", "pt") as h:
        recipe = json.loads(h.metadata()["sgmerge.recipe"])
    assert recipe["soup"]["ingredients"] == kept


def test_uniform_soup_is_the_mean(tmp_path: Path, capsys) -> None:
    cands = _candidates(tmp_path)[:4]
    out = tmp_path / "soup"
    res = cli(capsys, "soup", *map(str, cands), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    got = load_file(out / "model.safetensors")
    for k in got:
        mean = sum(load_file(c)[k].double() for c in cands) / len(cands)
        torch.testing.assert_close(got[k].double(), mean, rtol=1e-7, atol=1e-7)


def test_greedy_soup_without_eval_is_refused(tmp_path: Path, capsys) -> None:
    cands = _candidates(tmp_path)[:2]
    dest = tmp_path / "soup"
    assert_refused(
        cli(capsys, "soup", *map(str, cands), "--greedy", "-o", str(dest)), dest, "--eval"
    )


def _records(out: Path) -> tuple[dict[float, float], list[dict]]:
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    return {r["alpha"]: r["value"] for r in rows}, rows


@pytest.mark.parametrize(
    ("param", "values"), [("lambda", (0.0, 0.4, 1.0, 1.3)), ("density", (0.3, 0.8))]
)
def test_scan_config_equals_merges_written_and_reevaluated(
    tmp_path: Path, capsys, param: str, values: tuple[float, ...]
) -> None:
    from evalfns import closeness

    paths = _three(tmp_path)
    cfg = _ties(paths)
    spec = ",".join(f"{v:g}" for v in values)
    out = tmp_path / "scan"
    res = cli(capsys, "scan", "--config", str(_yaml(tmp_path / "ties.yml", cfg)), "--param",
              f"{param}={spec}", *EVAL, "-o", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    got, rows = _records(out)
    assert sorted(got) == sorted(values)
    assert {r["param"] for r in rows} == {param} and {r["path"] for r in rows} == {f"ties:{param}"}
    for v in values:
        point = {"lambda": v} if param == "lambda" else {}
        c = {**cfg, "parameters": {**cfg["parameters"], **point}}
        if param == "density":
            c["models"] = [
                {**m, "parameters": {**m["parameters"], "density": v}} for m in cfg["models"]
            ]
        disk = merge(c, tmp_path / f"w{param}{v}").out / "model.safetensors"
        from mergekit_sg.models.adapters import load_model

        want = closeness(load_model("python:evalfns:tiny_linear", disk))["value"]
        if param == "lambda":  # a linear path: float32 lerp of the endpoints
            assert got[v] == pytest.approx(want, rel=1e-5, abs=1e-6)
        else:  # merged again: the same bytes as the written merge
            assert got[v] == want
            assert all(torch.equal(merged_state_dict(c)[k], t) for k, t in load_file(disk).items())


def test_scan_config_and_positional_form(tmp_path: Path, capsys) -> None:
    paths = _three(tmp_path)
    cfg = str(_yaml(tmp_path / "ties.yml", _ties(paths)))
    out = tmp_path / "s"
    pair = (str(paths[0]), str(paths[1]))
    bad = cli(
        capsys, "scan", *pair, "--config", cfg, "--param", "lambda=0,1", *EVAL, "-o", str(out)
    )
    assert_refused(bad, out, "--config")
    assert_refused(cli(capsys, "scan", "--config", cfg, *EVAL, "-o", str(out)), out, "--param")


def test_merge_recipe_runs_and_dry_run_validates(tmp_path: Path, capsys) -> None:
    paths = _three(tmp_path)
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "merged"
    opts = {"config": _ta(paths), "param": ["lambda=0.5,1"]}
    recipe.write_text(yaml.safe_dump({"command": "merge", "out": str(out), "options": opts}))
    dry = cli(capsys, "run", str(recipe), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not out.exists()
    res = cli(capsys, "run", str(recipe))
    assert res.returncode == 0, res.stderr
    for lam in (0.5, 1.0):
        want = merge({**_ta(paths), "parameters": {"lambda": lam}}, tmp_path / f"p{lam}").out
        a, b = (
            load_file(out / f"lambda-{lam:g}" / "model.safetensors"),
            load_file(want / "model.safetensors"),
        )
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert (out / "sgmerge_recipe.yaml").exists()
    bad = tmp_path / "bad.yaml"
    opts = {"config": {**_ta(paths), "merge_method": "nope"}}
    bad.write_text(
        yaml.safe_dump({"command": "merge", "out": str(tmp_path / "x"), "options": opts})
    )
    assert_refused(cli(capsys, "run", str(bad), "--dry-run"), tmp_path / "x", "nope")


def test_soup_recipe_runs(tmp_path: Path, capsys) -> None:
    cands = _candidates(tmp_path)
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "soup"
    opts = {
        "candidates": [str(c) for c in cands],
        "greedy": True,
        "model": "python:evalfns:tiny_linear",
        "eval": ["held=python:evalfns:closeness"],
    }
    recipe.write_text(yaml.safe_dump({"command": "soup", "out": str(out), "options": opts}))
    res = cli(capsys, "run", str(recipe))
    assert res.returncode == 0, res.stderr
    w = load_file(out / "model.safetensors")["weight"]
    torch.testing.assert_close(w.double(), torch.tensor([[1.0, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("greedy", [True, False])
def test_soup_as_jobs_equals_in_process(tmp_path: Path, greedy: bool) -> None:
    """Every evaluation as a job (`score_members`, what --ray runs on a worker) gives the
    in-process soup's choices, scores and output bytes."""
    from mergekit_sg.jobs import LocalExecutor
    from mergekit_sg.path.soup import soup

    cands = _candidates(tmp_path)
    kw = {"model": EVAL[1], "eval": [EVAL[3]], "greedy": greedy}
    here = soup(cands, tmp_path / "here", **kw)
    jobs = soup(cands, tmp_path / "jobs", executor=LocalExecutor(), **kw)
    assert here.soup is not None and jobs.soup is not None
    assert jobs.soup.ingredients == here.soup.ingredients
    assert jobs.soup.individual == here.soup.individual and jobs.soup.score == here.soup.score
    assert [vars(s) for s in jobs.soup.steps] == [vars(s) for s in here.soup.steps]
    assert (tmp_path / "jobs" / "model.safetensors").read_bytes() == (
        tmp_path / "here" / "model.safetensors"
    ).read_bytes()
    assert sorted(here.kept) == (
        [str(cands[3]), str(cands[4])] if greedy else list(map(str, cands))
    )


def test_config_as_text_of_any_length() -> None:
    """A config given as YAML text is parsed as text: one line longer than a file name may be
    (it raised OSError 'File name too long' when tried as a path), and several lines."""
    from mergekit_sg.merge.mergekit_config import parse_config

    one = ", ".join(f"{{model: m{i}, parameters: {{weight: 1.0}}}}" for i in range(20))
    spec = parse_config(f"{{merge_method: linear, models: [{one}]}}")
    assert spec.merge_method == "linear" and len(spec.models) == 20
    many = "merge_method: linear\nmodels:\n" + "".join(f"  - model: m{i}\n" for i in range(3))
    assert len(parse_config(many).models) == 3
