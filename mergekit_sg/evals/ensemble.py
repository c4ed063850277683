"""The evaluator side of output-space ensembles: an evaluator kind that can score a mixture of
two models declares `outputs(model)` (what one forward pass over its data gives: class scores,
per-token log-probabilities, embeddings) and `mixed(out0, out1, alpha, mix)` (its metrics on the
mixture, by the rule of models/ensemble.py that fits its outputs). Both endpoints' outputs are
computed once; every alpha is then a cheap mix, and the cost of the ensemble is the two forward
passes (timed per evaluation)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.ensemble import Mix, ModelPair


@runtime_checkable
class Ensemblable(Protocol):
    name: str

    def outputs(self, model: LoadedModel) -> Any: ...

    def mixed(self, out0: Any, out1: Any, alpha: float, mix: Mix) -> dict[str, float]: ...


def can_ensemble(ev: Evaluator) -> bool:
    """Whether this evaluator says how its outputs mix (a python evaluator whose function has
    `outputs` and `score` attributes does too)."""
    probe = getattr(ev, "can_ensemble", None)
    if callable(probe):
        return bool(probe())
    return isinstance(ev, Ensemblable)


@dataclass
class EndpointOutputs:
    """One evaluator's outputs on both endpoints and the seconds each forward pass took."""

    first: Any
    second: Any
    seconds: tuple[float, float]

    @property
    def cost(self) -> float:
        """Inference seconds of one ensemble evaluation: both forward passes."""
        return self.seconds[0] + self.seconds[1]


def endpoint_outputs(ev: Evaluator, pair: ModelPair) -> EndpointOutputs:
    """Run the evaluator's forward pass on each endpoint model, timing each."""
    if not can_ensemble(ev):
        raise SgMergeError(
            f"--eval {ev.name}: this evaluator does not say how outputs mix, so it cannot "
            "score an output-space ensemble (--ensemble)"
        )
    e: Any = ev
    t0 = time.perf_counter()
    out0 = e.outputs(pair.first)
    t1 = time.perf_counter()
    out1 = e.outputs(pair.second)
    t2 = time.perf_counter()
    return EndpointOutputs(out0, out1, (t1 - t0, t2 - t1))
