"""Layer 4, evals: the `Evaluator` protocol (model in, named metrics out, each tagged
speciality or generality), the built-in evaluators behind `--eval NAME=KIND:ARG[,k=v...]`,
their option models, and the statistics they report."""

from mergekit_sg.evals.base import BaseEvaluator, EvalSpec, Evaluator
from mergekit_sg.evals.datasets import amazon_available
from mergekit_sg.evals.registry import build_evaluator, parse_eval
from mergekit_sg.evals.specs import (
    SPEC_MODELS,
    ClipClassifierOptions,
    ClipZeroShotOptions,
    EmbeddingSimilarityOptions,
    EvalOptions,
    LmMultipleChoiceOptions,
    LmPerplexityOptions,
    SeqClassificationOptions,
    validate_options,
)
from mergekit_sg.evals.stats import macro_f1, pearson, ranks, roc_auc, spearman

__all__ = [
    "SPEC_MODELS",
    "BaseEvaluator",
    "ClipClassifierOptions",
    "ClipZeroShotOptions",
    "EmbeddingSimilarityOptions",
    "EvalOptions",
    "EvalSpec",
    "Evaluator",
    "LmMultipleChoiceOptions",
    "LmPerplexityOptions",
    "SeqClassificationOptions",
    "amazon_available",
    "build_evaluator",
    "macro_f1",
    "parse_eval",
    "pearson",
    "ranks",
    "roc_auc",
    "spearman",
    "validate_options",
]
