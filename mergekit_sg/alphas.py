"""The one reader of coefficient lists: '0:1:0.1' (start:stop:step, both ends included) or
'0,0.25,0.5'. At the package root so that interpolate's --alpha (merge layer), merge's --param
and scan's --alphas all parse the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mergekit_sg.errors import SgMergeError


def parse_alphas(text: str | Sequence[object]) -> list[float]:
    """Sorted, de-duplicated alphas; ranges include both ends (rounded to 10 decimals)."""
    return parse_values(text, "--alphas")


def parse_values(text: str | Sequence[object], flag: str) -> list[float]:
    """'0.3,0.5' or '0:1:0.25' (start:stop:step, both ends included, the stop added when the
    steps miss it) or a list of those: sorted, de-duplicated (rounded to 10 decimals), finite.
    The one reader of coefficient lists: `--param` values and `scan --alphas`; `flag` names
    the option in errors."""
    if isinstance(text, str):
        items = [p for p in text.split(",") if p.strip()]
    else:
        items = [str(x) for x in text]
    out: list[float] = []
    for item in items:
        if ":" in item:
            parts = item.split(":")
            if len(parts) != 3:
                raise SgMergeError(f"{flag} {item!r}: write START:STOP:STEP, e.g. 0:1:0.1")
            start, stop, step = (_finite(p, flag) for p in parts)
            if step <= 0 or stop < start:
                raise SgMergeError(f"{flag} {item!r}: STEP must be > 0 and STOP >= START")
            n = math.floor((stop - start) / step + 1e-9)
            out += [start + i * step for i in range(n + 1)]
            out += [stop] if start + n * step < stop - 1e-9 else []
        else:
            out.append(_finite(item, flag))
    if not out:
        raise SgMergeError(f"{flag}: no value given")
    return sorted({round(a, 10) for a in out})


def _finite(text: str, flag: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise SgMergeError(f"{flag}: {text!r} is not a number")
    return v
