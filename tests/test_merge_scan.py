"""In-memory merges for scans: the lambda path of a task-vector merge equals the streamed merge
at each lambda (float32 rounding), `merged_state_dict` equals `merge` bit for bit, and the
greedy soup keeps exactly the candidates that improve the held-out score."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mergekit_sg.merge.memory import lambda_endpoints, merged_state_dict
from mergekit_sg.merge.merge import merge
from mergekit_sg.merge.soup import greedy_soup
from mergekit_sg.models.linear_path import LinearPath, lambda_path


def _three(root: Path) -> list[Path]:
    g = torch.Generator().manual_seed(3)
    base = {"lin.weight": torch.randn(6, 4, generator=g), "lin.bias": torch.randn(6, generator=g)}
    out = []
    for i in range(3):
        sd = (
            base
            if i == 0
            else {k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        )
        save_file(sd, root / f"m{i}.safetensors")
        out.append(root / f"m{i}.safetensors")
    return out


def _ties(paths: list[Path], lam: float = 1.0) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(paths[1]), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(paths[2]), "parameters": {"weight": 0.7, "density": 0.6}},
        ],
        "parameters": {"lambda": lam},
    }


def test_in_memory_merge_equals_streamed(tmp_path: Path) -> None:
    paths = _three(tmp_path)
    for lam in (0.4, 1.0):
        got = merged_state_dict(_ties(paths, lam))
        want = load_file(merge(_ties(paths, lam), tmp_path / f"o{lam}", model_card=False).out
                         / "model.safetensors")  # fmt: skip
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_lambda_path_scans_the_ties_merge(tmp_path: Path) -> None:
    paths = _three(tmp_path)
    module = torch.nn.Linear(4, 6)
    path = lambda_path(module, _ties(paths), rename=lambda n: f"lin.{n}")
    base, merged = lambda_endpoints(_ties(paths))
    assert isinstance(path, LinearPath)
    at1, m0 = merged_state_dict(_ties(paths, 1.0)), load_file(paths[0])
    assert all(torch.equal(merged[k], at1[k]) and torch.equal(base[k], m0[k]) for k in m0)
    for lam in (0.0, 0.3, 0.7, 1.0, 1.2):
        path.set(lam)
        want = merged_state_dict(_ties(paths, lam))
        live = {f"lin.{k}": v for k, v in module.state_dict().items()}
        for k, w in want.items():
            torch.testing.assert_close(live[k], w, rtol=1e-6, atol=1e-6)
    path.set(0.0)
    assert torch.equal(module.weight.detach(), load_file(paths[0])["lin.weight"])


def test_lambda_endpoints_read_each_input_once(tmp_path: Path, monkeypatch) -> None:
    """Both endpoints come from one read of the inputs: the base endpoint is the lambda-0
    merge (the base model's tensors, float32) without a second in-memory merge."""
    from mergekit_sg.io.lazy import Checkpoint

    paths = _three(tmp_path)
    want_base = merged_state_dict(_ties(paths, 0.0), out_dtype=torch.float32)
    want_merged = merged_state_dict(_ties(paths, 1.0), out_dtype=torch.float32)
    reads: list[str] = []
    orig = Checkpoint.read
    monkeypatch.setattr(
        Checkpoint, "read", lambda self, n, *a, **k: reads.append(n) or orig(self, n, *a, **k)
    )
    base, merged = lambda_endpoints(_ties(paths, 0.5))
    assert sorted(reads) == sorted(3 * list(want_base))  # 3 inputs, each tensor once
    assert base.keys() == want_base.keys() and merged.keys() == want_merged.keys()
    for k in want_base:
        assert base[k].dtype == torch.float32 and torch.equal(base[k], want_base[k])
        assert torch.equal(merged[k], want_merged[k])


def test_greedy_soup_adds_only_what_improves() -> None:
    target = torch.tensor([1.0, 1.0])
    cands = [
        {"w": torch.tensor([1.0, 0.0])},
        {"w": torch.tensor([0.0, 1.0])},
        {"w": torch.tensor([-5.0, -5.0])},
        {"w": torch.tensor([1.2, 0.9])},
    ]

    def score(sd) -> float:
        return -float((sd["w"] - target).pow(2).sum())

    res = greedy_soup(cands, score)
    # ranked: 3 (best alone), 0, 1, 2; 3+0 is worse than 3 alone; 3+1 likewise; 2 never helps
    assert res.individual == [score(c) for c in cands]
    assert res.ingredients[0] == 3 and 2 not in res.ingredients
    # brute-force the greedy rule over the same order
    kept, best = [3], score(cands[3])
    for i in (0, 1, 2):
        avg = sum(cands[j]["w"] for j in [*kept, i]) / (len(kept) + 1)
        if score({"w": avg}) > best:
            kept, best = [*kept, i], score({"w": avg})
    assert res.ingredients == kept and res.score == best
    torch.testing.assert_close(res.state["w"], sum(cands[j]["w"] for j in kept) / len(kept))
    assert [s.added for s in res.steps].count(True) == len(kept)
