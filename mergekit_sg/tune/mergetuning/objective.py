"""MERGETUNE's objective as pure functions: the task loss, the second-order surrogate for the
path to the zero-shot model, and the loss along linear paths to the fine-tuned model. Image
features are passed in once per batch and reused for every path point."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mergekit_sg.tune.prompt.prompt_file import clip_logits, cosine_surrogate

__all__ = ["cosine_surrogate", "l2_surrogate", "path_alphas", "prompt_objective"]


def path_alphas(
    k: int, mode: str = "grid", generator: torch.Generator | None = None
) -> list[float]:
    """K points strictly inside (0, 1): the midpoint grid (k=5 -> 0.1, 0.3, ..., 0.9) or uniform."""
    if k < 1:
        raise ValueError("need at least one path point")
    if mode == "random":
        return torch.rand(k, generator=generator, dtype=torch.float64).tolist()
    return [(2 * i + 1) / (2 * k) for i in range(k)]


def l2_surrogate(t_w: torch.Tensor, t_zs: torch.Tensor) -> torch.Tensor:
    """mean_c ||norm(T(w)_c) - norm(T_zs_c)||^2 (the --zs-loss l2 alternative)."""
    return (F.normalize(t_w, dim=-1) - F.normalize(t_zs, dim=-1)).pow(2).sum(-1).mean()


def prompt_objective(
    image: torch.Tensor,
    labels: torch.Tensor,
    t_w: torch.Tensor,
    t_w2: torch.Tensor,
    t_zs: torch.Tensor,
    scale: torch.Tensor | float,
    alphas: list[float],
    w_zs: float = 10.0,
    w_lmc: float = 1.0,
    zs_loss: str = "cos",
) -> dict[str, torch.Tensor]:
    """L = L_main + W * L_zs + W_lmc * L_lmc, the path points interpolating text features:
    L_lmc = mean_k CE(s I norm(T(w2) + a_k (T(w) - T(w2)))^T, y)."""
    main = F.cross_entropy(clip_logits(image, t_w, scale), labels)
    zs = cosine_surrogate(t_w, t_zs) if zs_loss == "cos" else l2_surrogate(t_w, t_zs)
    t_w2 = t_w2.detach()
    lmc = torch.stack(
        [
            F.cross_entropy(clip_logits(image, t_w2 + a * (t_w - t_w2), scale), labels)
            for a in alphas
        ]
    ).mean()
    return {"loss": main + w_zs * zs + w_lmc * lmc, "main": main, "zs": zs, "lmc": lmc}


def quadratic_penalty(
    w: dict[str, torch.Tensor], w1: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    """(w - w1)^T F (w - w1) with a diagonal F (the identity when none is given)."""
    terms = []
    for n, t in w.items():
        d = t - w1[n].detach()
        terms.append(((fisher[n] if fisher is not None else 1.0) * d * d).sum())
    return torch.stack(terms).sum()


def weight_path_loss(
    loss_at: object, w: dict[str, torch.Tensor], w2: dict[str, torch.Tensor], alphas: list[float]
) -> torch.Tensor:
    """mean_k loss(w2 + a_k (w - w2)): the path loss in weight space (head or any subset)."""
    return torch.stack(
        [
            loss_at({n: w2[n].detach() + a * (t - w2[n].detach()) for n, t in w.items()})
            for a in alphas
        ]  # type: ignore[operator]
    ).mean()
