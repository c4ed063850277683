"""MERGETUNE: continue a fine-tuned model's trainable part w (from w2) so that it keeps low-loss
linear paths to both the zero-shot model w1 and w2,

    L = L_main(w) + W * L_zs(w) + W_lmc * mean_k L(w2 + a_k (w - w2)),

in prompt mode (a CoOp context; path points interpolate text features) or weight modes (the
linear head or a parameter subset; path points interpolate weights); and the prompt benchmark
that runs CoOp and MERGETUNE over datasets and seeds.

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.tune.mergetuning.benchmark import PromptBenchmarkOptions, run_benchmark
    from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions, Settings
    from mergekit_sg.tune.mergetuning.objective import (
        cosine_surrogate,
        l2_surrogate,
        path_alphas,
        prompt_objective,
        quadratic_penalty,
        weight_path_loss,
    )
    from mergekit_sg.tune.mergetuning.run import mergetune
    from mergekit_sg.tune.mergetuning.weights import (
        LOG_FILE,
        Endpoints,
        HeadSplit,
        ObjectiveWeights,
        WeightResult,
        head_split,
        load_endpoint,
        loss_at,
        weight_objective,
    )

_LAZY = {
    "PromptBenchmarkOptions": "mergekit_sg.tune.mergetuning.benchmark",
    "run_benchmark": "mergekit_sg.tune.mergetuning.benchmark",
    "MergetuneOptions": "mergekit_sg.tune.mergetuning.mergetune_options",
    "Settings": "mergekit_sg.tune.mergetuning.mergetune_options",
    "cosine_surrogate": "mergekit_sg.tune.mergetuning.objective",
    "l2_surrogate": "mergekit_sg.tune.mergetuning.objective",
    "path_alphas": "mergekit_sg.tune.mergetuning.objective",
    "prompt_objective": "mergekit_sg.tune.mergetuning.objective",
    "quadratic_penalty": "mergekit_sg.tune.mergetuning.objective",
    "weight_path_loss": "mergekit_sg.tune.mergetuning.objective",
    "mergetune": "mergekit_sg.tune.mergetuning.run",
    "LOG_FILE": "mergekit_sg.tune.mergetuning.weights",
    "Endpoints": "mergekit_sg.tune.mergetuning.weights",
    "HeadSplit": "mergekit_sg.tune.mergetuning.weights",
    "ObjectiveWeights": "mergekit_sg.tune.mergetuning.weights",
    "WeightResult": "mergekit_sg.tune.mergetuning.weights",
    "head_split": "mergekit_sg.tune.mergetuning.weights",
    "load_endpoint": "mergekit_sg.tune.mergetuning.weights",
    "loss_at": "mergekit_sg.tune.mergetuning.weights",
    "weight_objective": "mergekit_sg.tune.mergetuning.weights",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "LOG_FILE",
    "Endpoints",
    "HeadSplit",
    "MergetuneOptions",
    "ObjectiveWeights",
    "PromptBenchmarkOptions",
    "Settings",
    "WeightResult",
    "cosine_surrogate",
    "head_split",
    "l2_surrogate",
    "load_endpoint",
    "loss_at",
    "mergetune",
    "path_alphas",
    "prompt_objective",
    "quadratic_penalty",
    "run_benchmark",
    "weight_objective",
    "weight_path_loss",
]
