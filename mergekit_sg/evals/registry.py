"""`--eval NAME=KIND:ARG[,key=value...]` -> an evaluator. Built-ins register a factory per
KIND; `python:module:function` calls user code with the live model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec, Evaluator
from mergekit_sg.models.adapters import LoadedModel

Factory = Callable[[EvalSpec], Evaluator]
_FACTORIES: dict[str, Factory] = {}


def register(kind: str) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        _FACTORIES[kind] = fn
        return fn

    return deco


def parse_eval(text: str) -> EvalSpec:
    """'speciality=seq-classification:test.csv,text=review' -> EvalSpec."""
    name, eq, rest = text.partition("=")
    if not eq or not name or ":" not in rest:
        raise SgMergeError(
            f"--eval {text!r}: write NAME=KIND:ARG, e.g. speciality=lm-perplexity:test.txt"
        )
    kind, _, tail = rest.partition(":")
    if kind == "python":
        target, _, opts = tail.partition(",")
        return EvalSpec(name, kind, target, _options(opts, text))
    arg, _, opts = tail.partition(",")
    return EvalSpec(name, kind, arg, _options(opts, text))


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
    _load_builtins()
    try:
        factory = _FACTORIES[spec.kind]
    except KeyError:
        known = ", ".join(sorted([*_FACTORIES, "python"]))
        raise SgMergeError(
            f"--eval {spec.name}: unknown evaluator {spec.kind!r}; known: {known}"
        ) from None
    return factory(spec)


def _load_builtins() -> None:
    """Import the modules whose import registers the built-in evaluators."""
    _register_lm_eval()
    for mod in ("classification", "language", "similarity", "clip_zeroshot"):
        try:
            importlib.import_module(f"mergekit_sg.evals.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"mergekit_sg.evals.{mod}":
                raise


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


def _register_lm_eval() -> None:
    """`lm-eval:TASK` (evals/lm_eval_bridge.py): registered here, imported only when used, so
    lm-evaluation-harness stays an optional extra."""
    if "lm-eval" in _FACTORIES:
        return

    def factory(spec: EvalSpec) -> Evaluator:
        from mergekit_sg.evals.lm_eval_bridge import build

        return build(spec)

    _FACTORIES["lm-eval"] = factory
