"""CoOp prompts and MERGETUNE's loss terms on a tiny random-init open_clip CLIP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import register_tiny_clip

from mergekit_sg.models import PromptLearner, prompt_features, template_features
from mergekit_sg.tune.mergetuning import (
    cosine_surrogate,
    path_alphas,
    prompt_objective,
    quadratic_penalty,
)

open_clip = pytest.importorskip("open_clip")
CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def tiny():
    name = register_tiny_clip()
    torch.manual_seed(0)
    clip = open_clip.create_model(name).eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip, open_clip.get_tokenizer(name)


def test_init_prompt_reproduces_the_template(tiny) -> None:
    clip, tok = tiny
    learner = PromptLearner(clip, tok, CLASSES, init="a photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, clip.token_embedding.weight.shape[1])
    want = clip.encode_text(tok([f"a photo of a {c}." for c in CLASSES]))
    torch.testing.assert_close(prompt_features(clip, learner), want, rtol=1e-5, atol=1e-6)


def test_path_alphas() -> None:
    assert path_alphas(5) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    r = path_alphas(7, "random", torch.Generator().manual_seed(0))
    assert len(r) == 7 and all(0 <= a < 1 for a in r)


def test_cosine_surrogate_is_half_squared_distance() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    half_sq = 0.5 * (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1).mean()
    torch.testing.assert_close(cosine_surrogate(a, b), half_sq)


def _batch(clip, n=12):
    g = torch.Generator().manual_seed(2)
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.arange(n) % len(CLASSES)
    with torch.no_grad():
        feats = F.normalize(clip.encode_image(images), dim=-1)  # once per batch
    return feats, labels


def test_at_init_every_path_point_is_the_finetuned_model(tiny) -> None:
    clip, tok = tiny
    ft = PromptLearner(clip, tok, CLASSES, init="a photo of a")
    w = PromptLearner(clip, tok, CLASSES, init="a photo of a")
    w.ctx.data.copy_(ft.ctx.data + 0.0)  # w starts as a copy of w2
    feats, y = _batch(clip)
    t_w2 = prompt_features(clip, ft).detach()
    t_zs = template_features(clip, tok, CLASSES, "a photo of a {}, a type of pet.")
    out = prompt_objective(
        feats, y, prompt_features(clip, w), t_w2, t_zs, clip.logit_scale.exp(), path_alphas(5)
    )
    ce_ft = F.cross_entropy(clip.logit_scale.exp() * feats @ F.normalize(t_w2, dim=-1).T, y)
    torch.testing.assert_close(out["lmc"], ce_ft)
    torch.testing.assert_close(out["main"], ce_ft)


def test_gradients_reach_only_the_context_and_steps_reduce_the_loss(tiny) -> None:
    clip, tok = tiny
    ft = PromptLearner(clip, tok, CLASSES, init=None, generator=torch.Generator().manual_seed(3))
    w = PromptLearner(clip, tok, CLASSES, init=None, generator=torch.Generator().manual_seed(3))
    feats, y = _batch(clip)
    t_w2 = prompt_features(clip, ft).detach()
    t_zs = template_features(clip, tok, CLASSES, "a photo of a {}.")
    opt = torch.optim.SGD(w.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        out = prompt_objective(feats, y, prompt_features(clip, w), t_w2, t_zs, 20.0, path_alphas(5))
        opt.zero_grad()
        out["loss"].backward()
        losses.append(float(out["loss"].detach()))
        opt.step()
    assert w.ctx.grad is not None and w.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert losses[-1] < losses[0]


def test_quadratic_penalty() -> None:
    w = {"h": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    w1 = {"h": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.5])}
    assert float(quadratic_penalty(w, w1, None)) == pytest.approx(1 + 4 + 1)
    f = {"h": torch.tensor([2.0, 0.5]), "b": torch.tensor([3.0])}
    assert float(quadratic_penalty(w, w1, f)) == pytest.approx(2 + 2 + 3)


def test_weight_objective_zs_term_path_is_the_exact_path_loss_to_w1() -> None:
    """--zs-term path: zs = mean_k CE at w1 + a_k (w - w1); quadratic: (w - w1)^T (w - w1)."""
    from types import SimpleNamespace

    from mergekit_sg.tune.mergetuning import (
        Endpoints,
        HeadSplit,
        ObjectiveWeights,
        loss_at,
        weight_objective,
    )

    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    task = SimpleNamespace(loss=lambda o: F.cross_entropy(o.logits, o.targets))
    split = HeadSplit(lambda b: feats, lambda f, p: f @ p["h"].T)
    w1 = {"h": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    w2 = {"h": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}
    w = {"h": torch.tensor([[2.0, -1.0], [0.5, 0.5]])}
    alphas = [0.25, 0.75]
    batch = {"labels": labels}

    def ce(h: torch.Tensor) -> float:
        return float(F.cross_entropy(feats @ h.T, labels))

    want_zs = (
        ce(w1["h"] + 0.25 * (w["h"] - w1["h"])) + ce(w1["h"] + 0.75 * (w["h"] - w1["h"]))
    ) / 2
    want_lmc = (
        ce(w2["h"] + 0.25 * (w["h"] - w2["h"])) + ce(w2["h"] + 0.75 * (w["h"] - w2["h"]))
    ) / 2
    at = loss_at(task, None, batch, split, feats)
    ends = Endpoints(w1, w2, None)
    t = weight_objective(at, w, ends, alphas, ObjectiveWeights(3.0, 2.0, "path"))
    assert float(t["main"]) == pytest.approx(ce(w["h"]))
    assert float(t["zs"]) == pytest.approx(want_zs)
    assert float(t["lmc"]) == pytest.approx(want_lmc)
    assert float(t["loss"]) == pytest.approx(ce(w["h"]) + 3 * want_zs + 2 * want_lmc)
    q = weight_objective(at, w, ends, alphas, ObjectiveWeights(3.0, 2.0))
    assert float(q["zs"]) == pytest.approx(1 + 1 + 0.25 + 0.25)  # ||w - w1||^2
    assert float(q["loss"]) == pytest.approx(ce(w["h"]) + 3 * 2.5 + 2 * want_lmc)


def test_few_shot_protocol() -> None:
    from mergekit_sg.tune.prompt import base_novel, few_shot, harmonic_mean

    assert base_novel(["a", "b", "c", "d", "e"]) == ([0, 1, 2], [3, 4])
    labels = [i % 5 for i in range(100)]
    pick = few_shot(labels, 4, seed=1, keep=[0, 1, 2])
    assert len(pick) == 12 and {labels[i] for i in pick} == {0, 1, 2}
    assert pick == few_shot(labels, 4, seed=1, keep=[0, 1, 2])  # seeded
    assert pick != few_shot(labels, 4, seed=2, keep=[0, 1, 2])
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)
