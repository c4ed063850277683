"""The options of `fisher`: the diagonal Fisher of a model on data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mergekit_sg.tune.tasks.task_options import TaskOptions


class FisherOptions(TaskOptions):
    """The diagonal Fisher of a model on data, from per-sample gradients."""

    mode: Literal["empirical", "sampled"] = Field(
        default="empirical",
        description="Labels: the data's (empirical) or drawn from the model's prediction.",
    )
    samples: int | None = Field(
        default=None, ge=1, description="Examples used (a seeded subset; default all)."
    )
    per_sample: Literal["auto", "vmap", "loop"] = Field(
        default="auto",
        description="Per-sample gradients with torch.func vmap, a loop, or vmap if it works.",
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per vmap batch.")
    force: bool = Field(default=False, description="Replace an existing output file.")
