"""LinearPath, scans, selection and LMC barriers on tiny models with known answers."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import pytest
import torch
from evalfns import CALLS

from mergekit_sg import SgMergeError, interpolate
from mergekit_sg.models import LinearPath, load_model
from mergekit_sg.path import (
    EvalInfo,
    ScanPoint,
    ScanResult,
    barrier,
    lmc,
    parse_alphas,
    scan,
    select,
)

IDS = torch.tensor([[3, 14, 15, 92, 65, 35, 8, 9]])


def logits(path_or_module) -> torch.Tensor:
    m = path_or_module
    if isinstance(m, (str, Path)):
        m = load_model("hf:causal-lm", m).module
    with torch.inference_mode():
        return m(IDS).logits


@pytest.mark.parametrize("fmt", ["f32", "bf16"])
def test_linear_path_matches_endpoints_and_interpolate(llama_pair, tmp_path, fmt) -> None:
    pre, ft = llama_pair[f"pre_{fmt}"], llama_pair[f"ft_{fmt}"]
    model = load_model("hf:causal-lm", pre)
    path = LinearPath(model.module, pre, ft)
    assert torch.equal(logits(path.set(1.0)), logits(ft))
    assert torch.equal(logits(path.set(0.0)), logits(pre))
    for alpha in (0.3, 0.75):
        merged = interpolate(pre, ft, tmp_path / f"m{alpha}", alpha=alpha).out
        assert torch.equal(logits(path.set(alpha)), logits(merged)), alpha
    path.set(0.3)
    path.set(0.9)
    assert torch.equal(logits(path.set(0.3)), logits(tmp_path / "m0.3"))  # no drift


def test_memory_does_not_grow_with_alphas(llama_pair) -> None:
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    model = load_model("hf:causal-lm", pre)
    path = LinearPath(model.module, pre, ft)

    def live_tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    path.set(0.5)
    before = live_tensors()
    for a in parse_alphas("0:1:0.02"):
        path.set(a)
    assert live_tensors() == before
    n_params = sum(t.numel() for t in model.module.state_dict().values() if t.is_floating_point())
    assert path.endpoint_bytes() == 2 * 4 * n_params  # two endpoints, nothing else kept


def test_parse_alphas() -> None:
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0:1:0.1")[-1] == 1.0 and len(parse_alphas("0:1:0.1")) == 11
    assert parse_alphas("0.5,0,1,0.5") == [0.0, 0.5, 1.0]
    with pytest.raises(SgMergeError):
        parse_alphas("1:0:0.1")


def test_barrier_of_linear_path_is_zero_and_of_a_bump_its_height() -> None:
    alphas = parse_alphas("0:1:0.1")
    assert barrier(alphas, [2.0 + 3.0 * a for a in alphas]) == (pytest.approx(0.0, abs=1e-12), 0.0)
    bump = [1.0 + a + (0.7 if abs(a - 0.4) < 1e-9 else 0.0) for a in alphas]
    h, at = barrier(alphas, bump)
    assert h == pytest.approx(0.7) and at == pytest.approx(0.4)


def result(points: list[tuple[float, float, float]]) -> ScanResult:
    evals = [
        EvalInfo("speciality", "speciality", "acc"),
        EvalInfo("generality", "generality", "acc"),
    ]
    r = ScanResult("p", evals)
    for a, s, g in points:
        r.points.append(ScanPoint(a, {"speciality": {"acc": s}, "generality": {"acc": g}}))
    return r


def test_selection_rules() -> None:
    r = result(
        [(0.0, 0.5, 0.9), (0.25, 0.78, 0.88), (0.5, 0.86, 0.84), (0.75, 0.88, 0.7), (1.0, 0.9, 0.6)]
    )
    hm = {p.alpha: r.hm(p) for p in r.points}
    assert select(r, "max-hm").alpha == max(hm, key=hm.get) == 0.5
    assert select(r, "max-generality", min_speciality="0.85").alpha == 0.5
    assert select(r, "max-generality", min_speciality="0.95x").alpha == 0.5  # floor 0.855
    assert select(r, "max-generality", min_speciality="97%").alpha == 0.75  # floor 0.873
    assert select(r, "max-speciality", min_generality="0.8").alpha == 0.5
    with pytest.raises(SgMergeError, match="no alpha meets"):
        select(r, "max-generality", min_speciality="0.95")


def test_scan_records_and_resumes(llama_pair, tmp_path: Path) -> None:
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    ev = [
        "speciality=python:evalfns:weight_mean",
        "generality=python:evalfns:lm_loss,primary=accuracy",
    ]
    CALLS["n"] = 0
    rep = scan(pre, ft, tmp_path / "scan", model="hf:causal-lm", eval=ev, alphas="0.2,0.6")
    assert [p.alpha for p in rep.result.points] == [0.0, 0.2, 0.6, 1.0]  # endpoints added
    assert CALLS["n"] == 4
    from safetensors.torch import load_file

    w0 = load_file(pre / "model.safetensors")["model.norm.weight"].double().mean()
    w1 = load_file(ft / "model.safetensors")["model.norm.weight"].double().mean()
    for p in rep.result.points:
        want = float((1 - p.alpha) * w0 + p.alpha * w1)
        assert p.metrics["speciality"]["value"] == pytest.approx(want, rel=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "scan/results.jsonl").read_text().splitlines()]
    assert len(lines) == 4 * 3 and {ln["metric"] for ln in lines} == {"value", "loss", "accuracy"}
    assert all(ln["toolkit"].startswith("mergekit-sg") and len(ln["inputs"]) == 2 for ln in lines)
    again = scan(pre, ft, tmp_path / "scan", model="hf:causal-lm", eval=ev, alphas="0.2,0.6,0.8")
    assert CALLS["n"] == 5  # only alpha=0.8 was evaluated
    assert again.result.points[1].metrics == rep.result.points[1].metrics


def test_write_best_carries_the_scan_as_evidence(llama_pair, tmp_path: Path) -> None:
    from mergekit_sg.commands import scan_command

    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    rep = scan_command(
        pre,
        ft,
        tmp_path / "scan",
        model="hf:causal-lm",
        alphas="0:1:0.5",
        eval=[
            "speciality=python:evalfns:weight_mean",
            "generality=python:evalfns:lm_loss,primary=accuracy",
        ],
        select="max-speciality",
        write_best=str(tmp_path / "best"),
    )
    assert rep.best is not None and rep.best.outputs == {rep.selection.alpha: tmp_path / "best"}
    card = (tmp_path / "best/README.md").read_text()
    assert "the alpha scan" in card
    pngs = list((tmp_path / "best").glob("*.png"))
    assert len(pngs) == 1 and f"]({pngs[0].name})" in card
    from mergekit_sg.io import check_card

    check_card(tmp_path / "best/README.md")


def test_lmc_three_points(llama_pair, tmp_path: Path) -> None:
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    mid = interpolate(pre, ft, tmp_path / "mid", alpha=0.5).out
    rep = lmc(
        [pre, mid, ft],
        tmp_path / "lmc",
        model="hf:causal-lm",
        alphas="0:1:0.25",
        eval=["loss=python:evalfns:lm_loss"],
    )
    assert [b.path for b in rep.barriers] == [
        "zero-shot->continued",
        "continued->fine-tuned",
        "zero-shot->fine-tuned",
    ]
    direct = rep.paths[2]
    # the midpoint model lies on the direct path: its loss is the direct path's loss at 0.5
    assert rep.paths[0].at(1.0).metrics["loss"]["loss"] == pytest.approx(
        direct.at(0.5).metrics["loss"]["loss"], abs=1e-5
    )
    for b, res in zip(rep.barriers, rep.paths, strict=True):
        losses = [p.metrics["loss"]["loss"] for p in res.points]
        assert b.height == pytest.approx(
            max(
                loss - ((1 - a) * losses[0] + a * losses[-1])
                for a, loss in zip(b.alphas, losses, strict=True)
            )
        )
