"""Few-shot protocol of CoOp-style benchmarks: seeded K-shot sampling per class, the
base/novel class split (first ceil(n/2) labels in label order are base), and the harmonic
mean of base and novel accuracy."""

from __future__ import annotations

import math
import random
from collections import defaultdict


def base_novel(classnames: list[str]) -> tuple[list[int], list[int]]:
    """Label indices of the base (first ceil(n/2)) and novel (the rest) classes."""
    n_base = math.ceil(len(classnames) / 2)
    return list(range(n_base)), list(range(n_base, len(classnames)))


def few_shot(labels: list[int], shots: int, seed: int, keep: list[int] | None = None) -> list[int]:
    """Indices of `shots` examples per class (all of a class that has fewer), seeded, sorted;
    only classes in `keep` when given."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        if keep is None or y in keep:
            by_class[y].append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    for y in sorted(by_class):
        idx = by_class[y]
        chosen.extend(idx if len(idx) <= shots else rng.sample(idx, shots))
    return sorted(chosen)


def harmonic_mean(base: float, novel: float) -> float:
    """2BN / (B + N), 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)
