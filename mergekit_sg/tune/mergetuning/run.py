"""`sgmerge mergetune`: continue training a fine-tuned model's trainable part w (starting at the
fine-tuned w2) so that it keeps low-loss linear paths to both the zero-shot model w1 and w2:

    L = L_main(w) + W * L_zs(w) + W_lmc * mean_k L(w2 + a_k (w - w2))

Prompt mode (default): w is a CoOp context; L_zs = 1 - mean cos(T(w), T_zs) with T_zs the
text features of the dataset's hand-written template; the path points interpolate text
features. Image features are computed once per batch and reused by every term; T(w2) and T_zs
once per run. Head mode (`--trainable head`) and subset mode (`--trainable GLOB`): the path
points interpolate weights and L_zs = (w - w1)^T F (w - w1) with a diagonal Fisher or the
identity (see `mergetune_weights`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.tracking import open_tracker, staging_beside
from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions, check_mode
from mergekit_sg.tune.mergetuning.prompt_mode import prompt_mode
from mergekit_sg.tune.mergetuning.weights import WeightResult, mergetune_weights
from mergekit_sg.tune.prompt import PromptResult
from mergekit_sg.tune.tasks import make


def mergetune(
    out: str | Path, options: MergetuneOptions | None = None, quiet: bool = True, **kwargs: Any
) -> PromptResult | WeightResult:
    """Continue `finetuned` with the MERGETUNE objective and write the result to `out`."""
    given = set(kwargs) | (options.model_fields_set if options is not None else set())
    opts: MergetuneOptions = make(MergetuneOptions, options, kwargs)
    out = Path(out)
    check_destination(out, opts.force)
    check_mode(opts, given)
    with open_tracker(opts, out, "mergetune", staging_beside(out)) as tracker:
        if opts.prompt_mode:
            return prompt_mode(opts, out, quiet, tracker)
        return mergetune_weights(opts, out, quiet, tracker)
