"""Linear mode connectivity: the loss along a path and its barrier, the largest rise of the
loss above the straight line between the endpoints' losses."""

from __future__ import annotations

from dataclasses import dataclass

from mergekit_sg.errors import SgMergeError
from mergekit_sg.path.walk import ScanResult


def barrier(alphas: list[float], losses: list[float]) -> tuple[float, float]:
    """max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))] and the alpha where it peaks.

    The path is given on [0, 1] with both endpoints; a path whose loss is linear has 0."""
    pts = dict(zip((round(a, 10) for a in alphas), losses, strict=True))
    if 0.0 not in pts or 1.0 not in pts:
        raise SgMergeError("a barrier needs the loss at both endpoints (alpha 0 and 1)")
    l0, l1 = pts[0.0], pts[1.0]
    gaps = [(loss - ((1 - a) * l0 + a * l1), a) for a, loss in sorted(pts.items())]
    height, at = max(gaps, key=lambda g: (g[0], -g[1]))
    return height, at


@dataclass
class PathBarrier:
    """The loss curve of one path and its barrier."""

    path: str
    alphas: list[float]
    losses: list[float]
    height: float
    at: float
    evaluator: str = ""
    metric: str = "loss"

    def sentence(self) -> str:
        """What the barrier means, in words."""
        where = (
            self.metric
            if self.evaluator in ("", self.metric)
            else f"{self.evaluator}.{self.metric}"
        )
        if self.height <= 0:
            return (
                f"{self.path}: no barrier: {where} stays on or below the straight line between "
                "the endpoints, so they are linearly mode-connected (every alpha is as good as "
                "the endpoints' mix)."
            )
        return (
            f"{self.path}: barrier {self.height:.4g} at alpha {self.at:g}: {where} rises that "
            "far above the straight line between the endpoints, so averaging their weights "
            "costs that much; the endpoints are not linearly mode-connected."
        )


def loss_metric(result: ScanResult, evaluator: str, metric: str | None) -> str:
    """The metric the barrier is taken on: the user's, else 'loss'/'nll', else a
    lower-is-better primary."""
    info = next(e for e in result.evals if e.name == evaluator)
    have = set(result.points[0].metrics.get(evaluator, {})) if result.points else set()
    if metric:
        if metric not in have:
            raise SgMergeError(f"--metric {metric}: {evaluator} reports {sorted(have)}")
        return metric
    for m in ("loss", "nll"):
        if m in have:
            return m
    if info.primary in info.lower_is_better:
        return info.primary
    raise SgMergeError(f"{evaluator} reports no loss ({sorted(have)}); name one with --metric")


def path_barrier(result: ScanResult, evaluator: str, metric: str | None = None) -> PathBarrier:
    m = loss_metric(result, evaluator, metric)
    alphas = [p.alpha for p in result.points]
    losses = [p.metrics[evaluator][m] for p in result.points]
    h, at = barrier(alphas, losses)
    return PathBarrier(result.path, alphas, losses, h, at, evaluator, m)
