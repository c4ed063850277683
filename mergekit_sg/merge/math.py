"""Pure tensor math for merging: no I/O, no state. Arithmetic happens in a compute dtype
(float32 by default) and the result is cast once to the output dtype."""

from __future__ import annotations

import torch

# Elements per block: small enough that the float32 temporaries stay in cache.
BLOCK = 1 << 16
# torch.lerp on these dtypes computes in float32 internally and rounds once (checked in tests).
LERP_NATIVE = (torch.float32, torch.bfloat16, torch.float16)


def lerp(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float,
    out_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """theta(alpha) = (1 - alpha) * a + alpha * b, rounded once to `out_dtype`.

    alpha=0 gives `a` and alpha=1 gives `b` bit for bit (cast to `out_dtype`)."""
    out = torch.empty(a.shape, dtype=out_dtype or b.dtype, device=a.device)
    lerp_into(out.view(-1), a.reshape(-1), b.reshape(-1), alpha, compute_dtype)
    return out


def lerp_into(
    out: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Write (1 - alpha) * a + alpha * b into the flat tensor `out`, computed in `compute_dtype`."""
    if alpha == 0.0:
        return out.copy_(a)
    if alpha == 1.0:
        return out.copy_(b)
    if compute_dtype == torch.float32 and a.dtype == b.dtype == out.dtype in LERP_NATIVE:
        return torch.lerp(a, b, alpha, out=out)
    n = out.numel()
    direct = out.dtype == compute_dtype
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        acc = out[s:e] if direct else torch.empty(e - s, dtype=compute_dtype, device=out.device)
        torch.mul(a[s:e].to(compute_dtype), 1.0 - alpha, out=acc)
        acc.add_(b[s:e].to(compute_dtype), alpha=alpha)
        if not direct:
            out[s:e].copy_(acc)
    return out


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(||a - b||^2, ||a||^2) in float64, to be summed over a group and then square-rooted."""
    a64 = a.reshape(-1).to(torch.float64)
    d = b.reshape(-1).to(torch.float64) - a64
    return float(d.dot(d)), float(a64.dot(a64))
