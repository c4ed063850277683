"""The diagonal Fisher information of a model on data:

    F_i = 1/N sum_n (d log p(y_n | x_n) / d theta_i)^2

from per-sample gradients (torch.func vmap of grad, or a loop over single examples when the
model's code cannot be vmapped). `empirical` uses the data's labels y_n; `sampled` draws y_n
from the model's own prediction (the true Fisher, one draw per example). For a causal LM the
sample's log-likelihood is the sum over its scored tokens. Stored with the weights' names and
shapes, it is what EWC, MERGETUNE's surrogate and Fisher-weighted interpolation read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.tune.tasks.base import IGNORE

Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
Collate = Callable[[list[Any]], dict[str, torch.Tensor]]
Mode = Literal["empirical", "sampled"]


def log_likelihood(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample log p(targets): [B, C] x [B] or summed over scored positions of [B, T, V]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    keep = targets != IGNORE
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * keep
    return picked.reshape(picked.shape[0], -1).sum(-1)


def draw_targets(
    logits: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Labels drawn from softmax(logits) at every position `targets` scores (IGNORE kept)."""
    probs = torch.softmax(logits.detach().float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1]).cpu()
    drawn = torch.multinomial(flat, 1, generator=generator).reshape(targets.shape)
    return torch.where(targets == IGNORE, targets, drawn.to(targets.device))


class _Apply(torch.nn.Module):
    """Makes `forward(module, batch)` the module's call, for torch.func.functional_call."""

    def __init__(self, module: torch.nn.Module, forward: Forward) -> None:
        super().__init__()
        self.module = module
        self.fn = forward

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fn(self.module, batch)


@dataclass
class _Accumulator:
    """One estimate in progress: the model and its trainable tensors, how to run and batch it,
    the label mode and its generator, and the running sums of squared gradients."""

    module: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    forward: Forward
    collate: Collate
    mode: Mode
    gen: torch.Generator
    acc: dict[str, torch.Tensor]
    advance: Callable[[int], None]


def _loop(run: _Accumulator, examples: list[Any]) -> None:
    """One backward pass per example."""
    names, tensors = list(run.params), list(run.params.values())
    for ex in examples:
        logits, targets = run.forward(run.module, run.collate([ex]))
        if run.mode == "sampled":
            targets = draw_targets(logits, targets, run.gen)
        ll = log_likelihood(logits, targets).sum()
        grads = torch.autograd.grad(ll, tensors, allow_unused=True)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                run.acc[n].add_(g.float().square())
        run.advance(1)


def _vmap(run: _Accumulator, examples: list[Any], batch_size: int) -> None:
    """Per-sample gradients of a batch at once: torch.func vmap of grad."""
    from torch.func import functional_call, grad, vmap

    wrapper = _Apply(run.module, run.forward)
    detached = {f"module.{n}": p.detach() for n, p in run.params.items()}
    mode = run.mode

    def ll_one(p: dict[str, torch.Tensor], sample: dict[str, torch.Tensor], drawn: torch.Tensor):
        one = {k: v.unsqueeze(0) for k, v in sample.items()}
        logits, targets = functional_call(wrapper, p, (one,))
        use = targets if mode == "empirical" else drawn.unsqueeze(0)
        return log_likelihood(logits, use).sum()

    per_sample = vmap(grad(ll_one), in_dims=(None, 0, 0))
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        batch = run.collate(chunk)
        with torch.no_grad():
            logits, targets = run.forward(run.module, batch)
        drawn = draw_targets(logits, targets, run.gen) if mode == "sampled" else targets
        grads = per_sample(detached, batch, drawn)
        for n in run.params:
            run.acc[n].add_(grads[f"module.{n}"].float().square().sum(0))
        run.advance(len(chunk))


def diagonal_fisher(
    module: torch.nn.Module,
    forward: Forward,
    examples: list[Any],
    collate: Collate,
    mode: Mode = "empirical",
    per_sample: Literal["auto", "vmap", "loop"] = "auto",
    batch_size: int = 16,
    seed: int = 0,
    advance: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """The diagonal Fisher of every trainable parameter (live names, float32, on the CPU) over
    `examples`, and the per-sample method used. The module is put in eval mode (no dropout)."""
    if not examples:
        raise SgMergeError("the Fisher needs at least one example")
    module.eval()
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    advance = advance or (lambda n: None)
    gen = torch.Generator().manual_seed(seed)

    def fresh() -> dict[str, torch.Tensor]:
        return {
            n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()
        }

    def start(gen: torch.Generator) -> _Accumulator:
        return _Accumulator(module, params, forward, collate, mode, gen, fresh(), advance)

    run, used = start(gen), per_sample
    if per_sample in ("auto", "vmap"):
        try:
            _vmap(run, examples, batch_size)
            used = "vmap"
        except RuntimeError as e:
            if per_sample == "vmap":
                raise SgMergeError(
                    f"--per-sample vmap: this model cannot be vmapped ({str(e).splitlines()[0]}); "
                    "use --per-sample loop"
                ) from None
            run, used = start(torch.Generator().manual_seed(seed)), "loop"
    if used == "loop":
        _loop(run, examples)
    return {n: (a / len(examples)).cpu() for n, a in run.acc.items()}, used
