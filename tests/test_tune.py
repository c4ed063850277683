"""The math of the forgetting mitigations: penalties and distillation against direct
computations, the Fisher against brute-force per-sample gradients, LoRA merge-back against
peft, and Fisher-weighted interpolation against its formula."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mergekit_sg import interpolate
from mergekit_sg.merge import fisher_lerp, lerp
from mergekit_sg.tune import finetuning as R
from mergekit_sg.tune.finetuning import add_lora, merged_state_dict, resolve_targets
from mergekit_sg.tune.fisher import diagonal_fisher, draw_targets, log_likelihood
from mergekit_sg.tune.tasks import IGNORE


def _pair(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"enc.weight": (3, 4), "enc.bias": (3,), "norm.weight": (3,), "head.weight": (2, 3)}
    theta = {
        n: torch.randn(s, generator=g, dtype=torch.float64).requires_grad_()
        for n, s in shapes.items()
    }
    ref = {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in shapes.items()}
    return theta, ref


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_penalties_value_and_gradient(reduction: str) -> None:
    theta, ref = _pair()
    g = torch.Generator().manual_seed(1)
    fisher = {n: torch.rand(t.shape, generator=g, dtype=torch.float64) for n, t in theta.items()}
    count = sum(t.numel() for t in theta.values()) if reduction == "mean" else 1
    d = {n: theta[n].detach() - ref[n] for n in theta}
    cases = {
        "l1": (
            R.l1_penalty(theta, ref, reduction),
            sum(v.abs().sum() for v in d.values()),
            {n: v.sign() for n, v in d.items()},
        ),
        "l2": (
            R.l2_penalty(theta, ref, reduction),
            sum((v * v).sum() for v in d.values()),
            {n: 2 * v for n, v in d.items()},
        ),
        "ewc": (
            R.ewc_penalty(theta, ref, fisher, reduction),
            sum((fisher[n] * v * v).sum() for n, v in d.items()),
            {n: 2 * fisher[n] * v for n, v in d.items()},
        ),
    }
    for kind, (got, want, grad) in cases.items():
        torch.testing.assert_close(got.double(), want / count, rtol=1e-6, atol=1e-7, msg=kind)
        grads = torch.autograd.grad(got, list(theta.values()))
        for (n, _), g_ in zip(theta.items(), grads, strict=True):
            torch.testing.assert_close(g_, grad[n] / count, rtol=1e-5, atol=1e-6, msg=f"{kind} {n}")


def test_penalty_is_zero_at_theta0_and_filters_select_parameters() -> None:
    theta, _ = _pair()
    same = {n: t.detach().clone() for n, t in theta.items()}
    assert R.l2_penalty(theta, same).item() == 0.0
    assert R.l1_penalty(theta, same).item() == 0.0

    def head(n: str) -> bool:
        return n.startswith("head.")

    assert R.select_params(theta, "all", head) == list(theta)
    assert R.select_params(theta, "no-head", head) == ["enc.weight", "enc.bias", "norm.weight"]
    assert R.select_params(theta, "no-norms-biases", head) == ["enc.weight", "head.weight"]


def test_kd_zero_for_equal_models_and_equals_scaled_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert R.kd_loss(t.clone(), t, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    temp = 3.0
    pt = F.softmax(t / temp, -1)
    want = temp**2 * (pt * (pt.log() - F.log_softmax(s / temp, -1))).sum(-1).mean()
    got = R.kd_loss(s, t, temp)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    (g_got,) = torch.autograd.grad(got, s)
    # d/ds of T^2 KL(pt || softmax(s/T)) averaged over rows = T (softmax(s/T) - pt) / rows
    want_grad = temp * (F.softmax(s.detach() / temp, -1) - pt) / s.shape[0]
    torch.testing.assert_close(g_got.double(), want_grad, rtol=1e-5, atol=1e-7)
    # token-level: masked positions do not count
    s3, t3 = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert R.kd_loss(s3, t3, 1.0, mask).item() == pytest.approx(
        R.kd_loss(s3[mask], t3[mask], 1.0).item(), rel=1e-6
    )


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(4, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


def _net_data(n: int = 9) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(4, generator=g), int(i % 3)) for i in range(n)]


def _net_collate(feats: list) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([f[0] for f in feats]), "y": torch.tensor([f[1] for f in feats])}


def _net_forward(module: torch.nn.Module, batch: dict[str, torch.Tensor]):
    return module(batch["x"]), batch["y"]


def _brute_fisher(model: torch.nn.Module, data: list, labels: list[int]) -> dict[str, torch.Tensor]:
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for (x, _), y in zip(data, labels, strict=True):
        model.zero_grad()
        torch.log_softmax(model(x[None]), -1)[0, y].backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad**2
    return {n: a / len(data) for n, a in acc.items()}


@pytest.mark.parametrize("per_sample", ["vmap", "loop"])
def test_empirical_fisher_equals_brute_force(per_sample: str) -> None:
    model, data = TinyNet(), _net_data()
    got, used = diagonal_fisher(
        model, _net_forward, data, _net_collate, "empirical", per_sample, batch_size=4
    )
    assert used == per_sample
    want = _brute_fisher(TinyNet(), data, [y for _, y in data])
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-8)


def test_sampled_fisher_draws_labels_from_the_model() -> None:
    model, data = TinyNet(), _net_data()
    got, _ = diagonal_fisher(model, _net_forward, data, _net_collate, "sampled", "loop", seed=5)
    gen = torch.Generator().manual_seed(5)
    labels = []
    with torch.no_grad():
        for x, y in data:
            labels.append(int(draw_targets(model(x[None]), torch.tensor([y]), gen)[0]))
    want = _brute_fisher(TinyNet(), data, labels)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-8)


def test_sequence_log_likelihood_skips_ignored_positions() -> None:
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, IGNORE, 4], [IGNORE, IGNORE, 0]])
    lp = torch.log_softmax(logits, -1)
    want = torch.stack([lp[0, 0, 1] + lp[0, 2, 4], lp[1, 2, 0]])
    torch.testing.assert_close(log_likelihood(logits, targets), want)


def test_fisher_lerp_formula_endpoints_and_equal_fishers() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    f0, f1 = torch.rand(50, generator=g), torch.rand(50, generator=g)
    f0[:5] = 0.0  # below the floor
    floor, alpha = 1e-3, 0.3
    c0, c1 = f0.double().clamp_min(floor), f1.double().clamp_min(floor)
    want = ((1 - alpha) * c0 * a.double() + alpha * c1 * b.double()) / (
        (1 - alpha) * c0 + alpha * c1
    )
    got = fisher_lerp(a, b, f0, f1, alpha, floor)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)
    assert torch.equal(fisher_lerp(a, b, f0, f1, 0.0), a)
    assert torch.equal(fisher_lerp(a, b, f0, f1, 1.0), b)
    same = torch.rand(50, generator=g) + 0.1
    torch.testing.assert_close(fisher_lerp(a, b, same, same, alpha), lerp(a, b, alpha))
    # a large F1 pulls towards the fine-tuned weights, a large F0 towards the pretrained
    big = torch.full((50,), 1e6)
    small = torch.full((50,), 1e-6)
    torch.testing.assert_close(fisher_lerp(a, b, small, big, 0.5), b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fisher_lerp(a, b, big, small, 0.5), a, rtol=1e-4, atol=1e-5)


def test_interpolate_with_fisher_files(llama_pair, tmp_path: Path) -> None:
    pre_dir, ft_dir = llama_pair["pre_f32"], llama_pair["ft_f32"]
    pre, ft = load_file(pre_dir / "model.safetensors"), load_file(ft_dir / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    f0 = {n: torch.rand(t.shape, generator=g) for n, t in pre.items()}
    f1 = {n: torch.rand(t.shape, generator=g) for n, t in pre.items()}
    save_file(f0, tmp_path / "f0.safetensors")
    save_file(f1, tmp_path / "f1.safetensors")
    fisher = f"{tmp_path / 'f0.safetensors'},{tmp_path / 'f1.safetensors'}"
    res = interpolate(pre_dir, ft_dir, tmp_path / "fm", alpha=[0.25, 0.5], fisher=fisher)
    for alpha, d in res.outputs.items():
        merged = load_file(d / "model.safetensors")
        for n in pre:
            want = fisher_lerp(pre[n], ft[n], f0[n], f1[n], alpha)
            assert torch.equal(merged[n], want), n
    # equal Fishers give the plain WiSE-FT interpolation
    save_file(f0, tmp_path / "f1.safetensors")
    same = f"{tmp_path / 'f0.safetensors'},{tmp_path / 'f1.safetensors'}"
    res = interpolate(pre_dir, ft_dir, tmp_path / "eq", alpha=0.4, fisher=same)
    plain = interpolate(pre_dir, ft_dir, tmp_path / "plain", alpha=0.4)
    got = load_file(res.out / "model.safetensors")
    want = load_file(plain.out / "model.safetensors")
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)


class Encoderish(torch.nn.Module):
    """Attention-like names (query/value) and a head, as LoRA targets see them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.query = torch.nn.Linear(8, 8)
        self.value = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.query(x) + self.value(x))


def _trained_lora(heads: list[str]) -> torch.nn.Module:
    peft_model = add_lora(Encoderish(), rank=2, targets=["q", "v"], alpha=3.0, train_modules=heads)
    with torch.no_grad():  # as if trained: nonzero B and a moved head copy
        for n, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
    return peft_model


def test_lora_targets_resolve_and_merge_equals_peft() -> None:
    assert resolve_targets(Encoderish(), ["q", "v"]) == ["query", "value"]
    peft_model = _trained_lora(["head"])
    mine = merged_state_dict(peft_model)
    theirs = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert list(mine) == list(theirs) == list(Encoderish().state_dict())
    for n in theirs:
        assert torch.equal(mine[n], theirs[n]), n


def test_interpolating_merged_lora_scales_the_delta(tmp_path: Path) -> None:
    peft_model = _trained_lora([])
    base = Encoderish().state_dict()
    merged = merged_state_dict(peft_model)
    save_file({k: v.contiguous() for k, v in base.items()}, tmp_path / "pre.safetensors")
    save_file({k: v.contiguous() for k, v in merged.items()}, tmp_path / "ft.safetensors")
    alpha = 0.35
    out = interpolate(
        tmp_path / "pre.safetensors",
        tmp_path / "ft.safetensors",
        tmp_path / "m",
        alpha=alpha,
        side_files=False,
        model_card=False,
    ).out
    got = load_file(out / "model.safetensors")
    with torch.no_grad():  # the same adapters with their delta scaled by alpha
        for layer in (peft_model.base_model.model.query, peft_model.base_model.model.value):
            layer.scaling["default"] *= alpha
    scaled = merged_state_dict(peft_model)
    for n in base:
        torch.testing.assert_close(got[n], scaled[n], rtol=1e-6, atol=1e-7)


def test_epoch_batches_cover_the_data_once_and_group_lengths() -> None:
    from mergekit_sg.tune.core import epoch_batches, lr_factor

    lengths = [(i * 37) % 23 + 1 for i in range(230)]
    for group in (False, True):
        batches = epoch_batches(lengths, 8, seed=1, epoch=2, group_by_length=group)
        assert sorted(i for b in batches for i in b) == list(range(230))
        assert batches == epoch_batches(lengths, 8, seed=1, epoch=2, group_by_length=group)
        assert batches != epoch_batches(lengths, 8, seed=1, epoch=3, group_by_length=group)
    grouped = epoch_batches(lengths, 8, seed=1, epoch=2, group_by_length=True)
    plain = epoch_batches(lengths, 8, seed=1, epoch=2)

    def padding(bs: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    assert padding(grouped) < padding(plain) / 3
    # warm-up then cosine to zero; linear; constant
    assert [lr_factor(s, 2, 10, "cosine") for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(6, 2, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 2, 10, "constant") == 1.0


def test_clip_templates() -> None:
    from mergekit_sg.tune.tasks import parse_templates

    assert len(parse_templates("openai")) == 80
    assert parse_templates("a photo of a {}.,art of") == ["a photo of a {}.", "art of {}"]
    assert parse_templates(None) == ["a photo of a {}."]
