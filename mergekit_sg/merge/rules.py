"""Per-tensor merge rules: which alpha a tensor gets (`--alpha-for GLOB=VALUE`, first match
wins), and which tensors are left out of the merge (`--exclude` / `--only`) and copied."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Literal

from mergekit_sg.errors import SgMergeError

Side = Literal["pretrained", "finetuned"]
# Largest |coefficient| accepted: extrapolating further is never meaningful (the result is
# dominated by rounding) and near float32's limit the arithmetic itself overflows to inf.
MAX_COEFFICIENT = 1e3


@dataclass(frozen=True)
class AlphaFor:
    pattern: str
    alpha: float


@dataclass(frozen=True)
class TensorRule:
    """What happens to one tensor: 'lerp' at one alpha per output, or 'copy' from one side."""

    kind: Literal["lerp", "copy"]
    alphas: tuple[float, ...] = ()
    side: Side = "finetuned"
    why: str = "default alpha"

    def describe(self) -> str:
        if self.kind == "copy":
            return f"copy from {self.side} ({self.why})"
        shown = ",".join(f"{a:g}" for a in self.alphas)
        return f"alpha={shown} ({self.why})"


def parse_alpha_for(items: list[str]) -> list[AlphaFor]:
    """'visual.*=0.3' -> AlphaFor('visual.*', 0.3)."""
    rules = []
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            alpha = float(value)
        except ValueError:
            alpha = math.nan
        if not sep or not pattern or not math.isfinite(alpha) or abs(alpha) > MAX_COEFFICIENT:
            raise SgMergeError(
                f"--alpha-for {item!r}: write GLOB=VALUE with a finite VALUE, |VALUE| <= "
                f"{MAX_COEFFICIENT:g}, e.g. 'visual.*=0.3'"
            )
        rules.append(AlphaFor(pattern, alpha))
    return rules


def rule_for(
    name: str,
    alphas: tuple[float, ...],
    alpha_for: list[AlphaFor],
    exclude: list[str],
    only: list[str],
    excluded_from: Side,
) -> TensorRule:
    """The rule of one floating tensor under the user's options."""
    for pat in exclude:
        if fnmatch.fnmatchcase(name, pat):
            return TensorRule("copy", side=excluded_from, why=f"--exclude {pat!r}")
    if only and not any(fnmatch.fnmatchcase(name, p) for p in only):
        return TensorRule("copy", side=excluded_from, why="not matched by --only")
    for r in alpha_for:
        if fnmatch.fnmatchcase(name, r.pattern):
            return TensorRule(
                "lerp", alphas=(r.alpha,) * len(alphas), why=f"--alpha-for {r.pattern!r}"
            )
    return TensorRule("lerp", alphas=alphas)
