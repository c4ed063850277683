"""The diagonal Fisher information of a model on data: the estimator (per-sample gradients),
the `sgmerge fisher` run and the Fisher file."""

from mergekit_sg.tune.fisher.compute import FisherResult, compute_fisher
from mergekit_sg.tune.fisher.diagonal import diagonal_fisher, draw_targets, log_likelihood
from mergekit_sg.tune.fisher.fisher_options import FisherOptions
from mergekit_sg.tune.fisher.store import load_fisher, save_fisher

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
