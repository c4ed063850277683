"""Alpha scans: evaluate a live model at every alpha of the linear path, both endpoints
included, recording each metric as it is computed so a rerun resumes where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mergekit_sg.evals.base import Evaluator
from mergekit_sg.io.progress import NullProgress, Progress
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.linear_path import LinearPath
from mergekit_sg.path.records import Record, RecordStore


class CoefficientPath(Protocol):
    """A live model moved to any value of one coefficient (`LinearPath` is one)."""

    alpha: float | None

    def set(self, alpha: float) -> object: ...


@dataclass(frozen=True)
class EvalInfo:
    """What a result needs to know about an evaluator after it ran."""

    name: str
    role: str
    primary: str
    lower_is_better: frozenset[str] = frozenset()

    @classmethod
    def of(cls, ev: Evaluator) -> EvalInfo:
        return cls(ev.name, ev.role, ev.primary, frozenset(ev.lower_is_better))


@dataclass
class ScanPoint:
    alpha: float
    metrics: dict[str, dict[str, float]]  # evaluator name -> metric -> value


@dataclass
class ScanResult:
    path: str
    evals: list[EvalInfo]
    points: list[ScanPoint] = field(default_factory=list)
    # `scan --ensemble`: the output-space ensemble at each alpha (metrics plus `seconds`)
    outputs: list[ScanPoint] = field(default_factory=list)
    mix: str | None = None  # how the ensemble's outputs mixed: "probs" or "logits"

    def score(self, point: ScanPoint, role: str) -> float | None:
        """Mean of the primary metrics of the evaluators with this role, oriented so that
        higher is better (lower-is-better primaries are negated)."""
        vals = []
        for e in self.evals:
            if e.role != role or e.name not in point.metrics:
                continue
            v = point.metrics[e.name].get(e.primary)
            if v is not None:
                vals.append(-v if e.primary in e.lower_is_better else v)
        return sum(vals) / len(vals) if vals else None

    def hm(self, point: ScanPoint) -> float | None:
        """Harmonic mean of speciality and generality, when both are positive."""
        s, g = self.score(point, "speciality"), self.score(point, "generality")
        if s is None or g is None or s <= 0 or g <= 0:
            return None
        return 2 * s * g / (s + g)

    def at(self, alpha: float) -> ScanPoint:
        return min(self.points, key=lambda p: abs(p.alpha - alpha))

    def rows(self) -> list[dict[str, float | None]]:
        """One flat row per alpha: every metric, then speciality, generality, hm."""
        out = []
        for p in self.points:
            row: dict[str, float | None] = {"alpha": p.alpha}
            for e in self.evals:
                for m, v in p.metrics.get(e.name, {}).items():
                    row[f"{e.name}.{m}"] = v
            row["speciality"] = self.score(p, "speciality")
            row["generality"] = self.score(p, "generality")
            row["hm"] = self.hm(p)
            out.append(row)
        return out

    def all_rows(self) -> list[dict[str, float | str | None]]:
        """rows() marked space=weight, then the output-space ensemble's rows (space=output,
        with its inference cost `<evaluator>.seconds`): one table for both curves."""
        weight = [{"space": "weight", **r} for r in self.rows()]
        ens = ScanResult(self.path, self.evals, self.outputs).rows()
        return [*weight, *({"space": "output", **r} for r in ens)]


def with_endpoints(alphas: list[float]) -> list[float]:
    """Both endpoints are always evaluated: they anchor selection and barriers."""
    return sorted({round(a, 10) for a in [*alphas, 0.0, 1.0]})


def scan_path(
    path: LinearPath | CoefficientPath,
    model: LoadedModel,
    alphas: list[float],
    evaluators: list[Evaluator],
    store: RecordStore | None = None,
    inputs: dict[str, str] | None = None,
    path_name: str = "pretrained->finetuned",
    progress: Progress | None = None,
    extra: dict[str, str] | None = None,
    started: bool = False,
) -> ScanResult:
    """Evaluate every evaluator at every alpha; alphas already in `store` are not recomputed.
    `path` is anything with `alpha` and `set(alpha)` (a LinearPath, or a coefficient of a merge
    method); `extra` goes into every record (the parameter name of a method's scan). The
    progress counts alpha x evaluator steps and names the alpha (i of n) and evaluator;
    `started`: the caller opened it for several paths (lmc) and closes it."""
    store = store or RecordStore(None)
    inputs = inputs or {}
    progress = progress or NullProgress()
    result = ScanResult(path_name, [EvalInfo.of(e) for e in evaluators])
    if not started:
        progress.start("scan", len(alphas) * len(evaluators), 0)
    try:
        for i, alpha in enumerate(alphas, 1):
            point = ScanPoint(alpha, {})
            where = f"{path_name} " if started else ""
            for ev in evaluators:
                progress.step(f"{where}alpha {alpha:g} ({i}/{len(alphas)}), {ev.name}")
                cached = store.done(path_name, alpha, ev.name, inputs)
                if cached is None:
                    if path.alpha != alpha:
                        path.set(alpha)
                    metrics = ev(model)
                    store.add(
                        [
                            Record(path_name, alpha, ev.name, m, v, ev.role, inputs)
                            for m, v in metrics.items()
                        ],
                        extra,
                    )
                    cached = metrics
                point.metrics[ev.name] = cached
                progress.advance(1, 0)
            result.points.append(point)
    finally:
        if not started:
            progress.finish()
    return result
