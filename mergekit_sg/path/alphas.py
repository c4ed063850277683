"""Alpha grids: '0:1:0.1' (start:stop:step, both ends included) or '0,0.25,0.5', read by the
merge layer's one reader of coefficient lists (`--param` values use it too)."""

from __future__ import annotations

from mergekit_sg.merge.merge import parse_values


def parse_alphas(text: str | list[float] | list[str]) -> list[float]:
    """Sorted, de-duplicated alphas; ranges include both ends (rounded to 10 decimals)."""
    return parse_values(text, "--alphas")
