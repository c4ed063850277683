"""Fisher-weighted interpolation (Matena & Raffel's Fisher merging of two models, at alpha):

    theta = ((1 - a) F0 theta0 + a F1 theta1) / ((1 - a) F0 + a F1),   F = max(F, floor)

per element, with F0, F1 the diagonal Fishers of the pretrained and the fine-tuned model. Equal
Fishers give plain interpolation; a=0 and a=1 give the endpoints bit for bit. `fisher_lerp` is
the whole-tensor formula (a reference and an in-memory helper); merges stream through the one
executor with the `fisher` method (merge/methods/linear.py), which computes the same
operations in the same order, so both give the same bytes."""

from __future__ import annotations

import torch

from mergekit_sg.errors import SgMergeError

DEFAULT_FLOOR = 1e-6


def fisher_lerp(
    theta0: torch.Tensor,
    theta1: torch.Tensor,
    f0: torch.Tensor,
    f1: torch.Tensor,
    alpha: float,
    floor: float = DEFAULT_FLOOR,
    out_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """((1-a) F0 theta0 + a F1 theta1) / ((1-a) F0 + a F1) with F floored, rounded once."""
    out_dtype = out_dtype or theta1.dtype
    if not 0.0 <= alpha <= 1.0:
        raise SgMergeError(f"alpha={alpha:g}: Fisher-weighted interpolation needs 0 <= alpha <= 1")
    if alpha == 0.0:
        return theta0.to(out_dtype, copy=True)
    if alpha == 1.0:
        return theta1.to(out_dtype, copy=True)
    w0 = f0.to(compute_dtype).clamp_min(floor).mul_(1.0 - alpha)
    w1 = f1.to(compute_dtype).clamp_min(floor).mul_(alpha)
    num = w0 * theta0.to(compute_dtype) + w1 * theta1.to(compute_dtype)
    return num.div_(w0.add_(w1)).to(out_dtype)
