"""The output-space side of a scan (`scan --ensemble`): at every alpha, the ensemble of the two
endpoint models' outputs mixed with weight alpha, f(x) = (1 - a) f_0(x) + a f_1(x), in the
space each evaluator kind declares (class probabilities or logits, token probabilities,
normalised embeddings). Each endpoint runs its forward pass once per evaluator; every alpha is
then a mix of the two. Records carry space="output" and the metric `seconds`, the inference
cost of one ensemble evaluation (both forward passes)."""

from __future__ import annotations

from mergekit_sg.evals.base import Evaluator
from mergekit_sg.evals.ensemble import EndpointOutputs, endpoint_outputs
from mergekit_sg.models.ensemble import Mix, ModelPair
from mergekit_sg.path.records import Record, RecordStore
from mergekit_sg.path.walk import ScanPoint

COST = "seconds"  # the metric an output-space record carries beside the evaluator's


def scan_outputs(
    pair: ModelPair,
    alphas: list[float],
    evaluators: list[Evaluator],
    mix: Mix,
    store: RecordStore,
    inputs: dict[str, str],
    path_name: str,
) -> list[ScanPoint]:
    """The ensemble's metrics (and its cost in seconds) at every alpha; alphas already in
    `store` are not recomputed, and an evaluator with every alpha recorded runs no model."""
    points = [ScanPoint(a, {}) for a in alphas]
    for ev in evaluators:
        outs: EndpointOutputs | None = None
        for point in points:
            cached = store.done(path_name, point.alpha, ev.name, inputs, "output")
            if cached is None:
                if outs is None:
                    outs = endpoint_outputs(ev, pair)
                metrics = {**ev.mixed(outs.first, outs.second, point.alpha, mix), COST: outs.cost}  # type: ignore[attr-defined]
                store.add(
                    [
                        Record(path_name, point.alpha, ev.name, m, v, ev.role, inputs, "output")
                        for m, v in metrics.items()
                    ]
                )
                cached = metrics
            point.metrics[ev.name] = cached
    return points
