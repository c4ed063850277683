"""The interpolation formula: endpoints bit for bit, float32 arithmetic rounded once."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import exact, within_fp32_rounding
from hypothesis import given, settings
from hypothesis import strategies as st

from mergekit_sg.merge import lerp, relative_l2

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def pair(n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g)
    b = a + 0.1 * torch.randn(n, generator=g)
    return a.to(dtype), b.to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_endpoints_are_bit_exact(dtype: torch.dtype) -> None:
    a, b = pair(10_000, dtype, 0)
    a[0], b[1] = -0.0, float("inf")  # signed zeros and infinities survive too
    assert torch.equal(bits(lerp(a, b, 0.0)), bits(a))
    assert torch.equal(bits(lerp(a, b, 1.0)), bits(b))


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.floats(-0.5, 1.5, allow_nan=False),
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(DTYPES),
)
def test_formula_rounded_once(alpha: float, n: int, seed: int, dtype: torch.dtype) -> None:
    a, b = pair(n, dtype, seed)
    out = lerp(a, b, alpha)
    assert out.dtype == dtype
    within_fp32_rounding(out, a, b, alpha)


def test_not_a_bfloat16_accumulation() -> None:
    """bf16 arithmetic would be off by many ulps on a large share of elements."""
    a, b = pair(1 << 16, torch.bfloat16, 7)
    out = lerp(a, b, 0.3)
    ref = exact(a, b, 0.3).float().to(torch.bfloat16)
    bf16_arith = a + 0.3 * (b - a)
    assert (out != ref).float().mean() < 0.002  # only float32 rounding-boundary cases
    assert (bf16_arith != ref).float().mean() > 0.01


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_and_float64_compute(dtype: torch.dtype) -> None:
    a, b = pair(5000, torch.float32, 3)
    out = lerp(a, b.to(dtype), 0.25, out_dtype=torch.float32, compute_dtype=torch.float64)
    ref = exact(a, b.to(dtype), 0.25).float()
    assert torch.equal(out, ref)


def test_relative_l2() -> None:
    a = torch.tensor([3.0, 4.0])
    b = torch.tensor([3.0, 5.0])
    d2, a2 = relative_l2(a, b)
    assert d2 == 1.0 and a2 == 25.0
    assert math.isclose(math.sqrt(d2 / a2), 0.2)
