"""`--eval NAME=KIND:ARG[,key=value...]` -> an evaluator. Each built-in KIND has an options
model (evals/specs.py) and a factory (the table below); `python:module:function` calls user code
with the live model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec, Evaluator
from mergekit_sg.evals.specs import validate_options
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.ensemble import Mix, mix_scores

Factory = Callable[[EvalSpec, Any], Evaluator]


def factories() -> dict[str, Factory]:
    """KIND -> factory(spec, options validated by the kind's model in evals/specs.py). The
    evaluator modules are imported here, when an evaluator is built, not at CLI start-up."""
    from mergekit_sg.evals import classification, clip_zeroshot, language, similarity

    return {
        "seq-classification": classification.seq_classification,
        "lm-perplexity": language.lm_perplexity,
        "lm-multiple-choice": language.lm_multiple_choice,
        "embedding-similarity": similarity.embedding_similarity,
        "clip-zeroshot": clip_zeroshot.clip_zeroshot,
        "clip-classifier": clip_zeroshot.clip_classifier,
        "lm-eval": _lm_eval,
    }


def _lm_eval(spec: EvalSpec, options: Any) -> Evaluator:
    """`lm-eval:TASK` (evals/lm_eval_bridge.py), imported only when used, so
    lm-evaluation-harness stays an optional extra."""
    from mergekit_sg.evals.lm_eval_bridge import build

    return build(spec)


def parse_eval(text: str) -> EvalSpec:
    """'speciality=seq-classification:test.csv,text=review' -> EvalSpec, its options checked
    by its kind's model (no data or model is loaded)."""
    name, eq, rest = text.partition("=")
    if not eq or not name or ":" not in rest:
        raise SgMergeError(
            f"--eval {text!r}: write NAME=KIND:ARG, e.g. speciality=lm-perplexity:test.txt"
        )
    kind, _, tail = rest.partition(":")
    arg, _, opts = tail.partition(",")
    spec = EvalSpec(name, kind, arg, _options(opts, text))
    if kind != "python":
        validate_options(spec.name, spec.kind, spec.options)
    return spec


def _options(text: str, whole: str) -> dict[str, str]:
    out = {}
    for item in filter(None, text.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise SgMergeError(f"--eval {whole!r}: option {item!r} is not key=value")
        out[k.strip()] = v.strip()
    return out


def build_evaluator(text: str | EvalSpec) -> Evaluator:
    spec = parse_eval(text) if isinstance(text, str) else text
    if spec.kind == "python":
        return PythonEvaluator.from_spec(spec)
    options = validate_options(spec.name, spec.kind, spec.options)
    return factories()[spec.kind](spec, options)


@dataclass
class PythonEvaluator(BaseEvaluator):
    """A user function `fn(model: LoadedModel, **options) -> dict[str, float] | float`."""

    fn: Callable[..., object] | None = None
    options: dict[str, str] | None = None

    @classmethod
    def from_spec(cls, spec: EvalSpec) -> PythonEvaluator:
        mod, _, fn = spec.arg.partition(":")
        try:
            target = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError, ValueError):
            raise SgMergeError(
                f"--eval {spec.name}: cannot import {spec.arg!r} (module:function)"
            ) from None
        opts = dict(spec.options)
        primary = opts.pop("primary", "value")
        lower = frozenset(filter(None, opts.pop("lower_is_better", "").split("+")))
        return cls(spec.name, spec.role, primary, lower, fn=target, options=opts)

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        assert self.fn is not None
        out = self.fn(model, **(self.options or {}))
        if isinstance(out, (int, float)):
            return {self.primary: float(out)}
        if not isinstance(out, dict):
            raise SgMergeError(f"--eval {self.name}: the function must return a float or a dict")
        return {str(k): float(v) for k, v in out.items()}

    def can_ensemble(self) -> bool:
        """A user function takes part in output-space ensembles when it carries
        `fn.outputs(model, **options) -> (class scores [N, C], targets)` and
        `fn.score(scores, targets) -> dict` (as prompt_eval does): scores mix as CLIP logits."""
        return callable(getattr(self.fn, "outputs", None)) and callable(
            getattr(self.fn, "score", None)
        )

    def outputs(self, model: LoadedModel) -> Any:
        return self.fn.outputs(model, **(self.options or {}))  # type: ignore[union-attr]

    def mixed(self, out0: Any, out1: Any, alpha: float, mix: Mix) -> dict[str, float]:
        scores = mix_scores(out0[0], out1[0], alpha, mix)
        return {str(k): float(v) for k, v in self.fn.score(scores, out0[1]).items()}  # type: ignore[union-attr]
