"""The diagonal Fisher information of a model on data: the estimator (per-sample gradients),
the `sgmerge fisher` run and the Fisher file.

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.fisher.compute import FisherResult, compute_fisher
    from mergekit_sg.tune.fisher.diagonal import diagonal_fisher, draw_targets, log_likelihood
    from mergekit_sg.tune.fisher.fisher_options import FisherOptions
    from mergekit_sg.tune.fisher.store import load_fisher, save_fisher

_LAZY = {
    "FisherResult": "mergekit_sg.tune.fisher.compute",
    "compute_fisher": "mergekit_sg.tune.fisher.compute",
    "diagonal_fisher": "mergekit_sg.tune.fisher.diagonal",
    "draw_targets": "mergekit_sg.tune.fisher.diagonal",
    "log_likelihood": "mergekit_sg.tune.fisher.diagonal",
    "FisherOptions": "mergekit_sg.tune.fisher.fisher_options",
    "load_fisher": "mergekit_sg.tune.fisher.store",
    "save_fisher": "mergekit_sg.tune.fisher.store",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "FisherOptions",
    "FisherResult",
    "compute_fisher",
    "diagonal_fisher",
    "draw_targets",
    "load_fisher",
    "log_likelihood",
    "save_fisher",
]
