"""Alpha grids: '0:1:0.1' (start:stop:step, both ends included) or '0,0.25,0.5'."""

from __future__ import annotations

import math

from mergekit_sg.errors import SgMergeError


def parse_alphas(text: str | list[float] | list[str]) -> list[float]:
    """Sorted, de-duplicated alphas; ranges include both ends (rounded to 10 decimals)."""
    if isinstance(text, list):
        items = [str(x) for x in text]
    else:
        items = [p for p in text.split(",") if p.strip()]
    out: list[float] = []
    for item in items:
        if ":" in item:
            out.extend(_range(item))
        else:
            out.append(_float(item))
    if not out:
        raise SgMergeError("--alphas: no alpha given")
    return sorted({round(a, 10) for a in out})


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise SgMergeError(f"--alphas: {text!r} is not a number")
    return v


def _range(text: str) -> list[float]:
    parts = text.split(":")
    if len(parts) != 3:
        raise SgMergeError(f"--alphas {text!r}: write START:STOP:STEP, e.g. 0:1:0.1")
    start, stop, step = (_float(p) for p in parts)
    if step <= 0 or stop < start:
        raise SgMergeError(f"--alphas {text!r}: STEP must be > 0 and STOP >= START")
    n = math.floor((stop - start) / step + 1e-9)
    return [start + i * step for i in range(n + 1)] + (
        [stop] if start + n * step < stop - 1e-9 else []
    )
