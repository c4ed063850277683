"""Small exact statistics the evaluators report (no scipy): ranks with ties, Pearson, Spearman,
ROC AUC and macro-F1, in float64 on plain sequences."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mergekit_sg.errors import SgMergeError


def ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks, ties given the mean of the ranks they span (as scipy.stats.rankdata)."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    out = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            out[order[k]] = mean_rank
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; nan when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise SgMergeError(
            f"correlation needs two equal-length series of >= 2 ({len(x)}, {len(y)})"
        )
    mx = math.fsum(x) / len(x)
    my = math.fsum(y) / len(y)
    dx = [a - mx for a in x]
    dy = [b - my for b in y]
    sxy = math.fsum(a * b for a, b in zip(dx, dy, strict=True))
    sxx = math.fsum(a * a for a in dx)
    syy = math.fsum(b * b for b in dy)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the tie-averaged ranks."""
    return pearson(ranks(x), ranks(y))


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of `scores` for the positive class (label 1): the probability
    that a random positive outscores a random negative, ties counting one half."""
    r = ranks(scores)
    n_pos = sum(1 for v in labels if v == 1)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = math.fsum(ri for ri, v in zip(r, labels, strict=True) if v == 1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def macro_f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in labels or predictions."""
    classes = sorted(set(preds) | set(labels))
    scores = []
    for c in classes:
        tp = sum(1 for p, t in zip(preds, labels, strict=True) if p == c and t == c)
        fp = sum(1 for p, t in zip(preds, labels, strict=True) if p == c and t != c)
        fn = sum(1 for p, t in zip(preds, labels, strict=True) if p != c and t == c)
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return math.fsum(scores) / len(scores) if scores else math.nan
