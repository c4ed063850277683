"""MERGETUNE: continue a fine-tuned model's trainable part w (from w2) so that it keeps low-loss
linear paths to both the zero-shot model w1 and w2,

    L = L_main(w) + W * L_zs(w) + W_lmc * mean_k L(w2 + a_k (w - w2)),

in prompt mode (a CoOp context; path points interpolate text features) or weight modes (the
linear head or a parameter subset; path points interpolate weights); and the prompt benchmark
that runs CoOp and MERGETUNE over datasets and seeds."""

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
