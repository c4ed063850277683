"""The options of an interpolation: one pydantic model drives the CLI flags, the Python keyword
arguments and the YAML recipe keys, so a misspelt key is an error everywhere."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergekit_sg.merge.rules import MAX_COEFFICIENT, Side


def check_coefficient(value: float) -> float:
    """A merge coefficient must be a finite number with |value| <= MAX_COEFFICIENT."""
    if not math.isfinite(value) or abs(value) > MAX_COEFFICIENT:
        raise ValueError(
            f"{value!r} is not a usable coefficient: give a finite number with "
            f"|value| <= {MAX_COEFFICIENT:g} (0 = pretrained, 1 = fine-tuned)"
        )
    return value


def split_floats(value: object) -> object:
    """Accept 0.5, '0.2,0.4', ['0.2', '0.4'] or [0.2, 0.4]."""
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        out: list[object] = []
        for v in value:
            if isinstance(v, str):
                out.extend(p.strip() for p in v.split(",") if p.strip())
            else:
                out.append(v)
        return out
    return value


class RunOptions(BaseModel):
    """How to run a merge (any method): where the math runs, its dtype, the output shards,
    what goes beside the weights, and whether an existing destination is replaced."""

    model_config = ConfigDict(extra="forbid")

    compute_dtype: Literal["float32", "float64"] = Field(
        default="float32", description="Dtype the arithmetic is done in."
    )
    max_shard_size: str = Field(default="5GB", description="Largest output shard, e.g. 5GB, 2GiB.")
    device: str = Field(
        default="auto", description="Where the math runs: cpu, cuda[:N] or auto (a GPU if any)."
    )
    side_files: bool = Field(default=True, description="Copy config/tokenizer files.")
    model_card: bool = Field(default=True, description="Write a README.md model card.")
    force: bool = Field(default=False, description="Replace an existing destination.")
    strict: bool = Field(
        default=False,
        description="Refuse inputs holding NaN or inf values (default: a warning naming them).",
    )


class InterpolateRules(BaseModel):
    """What WiSE-FT merges: the alphas, per-tensor rules, Fisher weighting."""

    model_config = ConfigDict(extra="forbid")

    alpha: list[float] = Field(
        default=[0.5],
        min_length=1,
        description="Mixing coefficient(s); 0 = pretrained, 1 = fine-tuned. A comma list or "
        "START:STOP:STEP for several outputs in one pass (written to OUT/alpha-A).",
    )
    alpha_for: list[str] = Field(
        default=[], description="GLOB=VALUE: alpha for matching tensors (repeatable, first wins)."
    )
    exclude: list[str] = Field(
        default=[], description="GLOB of tensors not merged but copied (repeatable)."
    )
    only: list[str] = Field(
        default=[], description="Merge only tensors matching GLOB; copy the rest (repeatable)."
    )
    excluded_from: Side = Field(
        default="finetuned", description="Side that excluded tensors are copied from."
    )
    fisher: list[str] = Field(
        default=[],
        description="F_PRETRAINED,F_FINETUNED: Fisher files (sgmerge fisher) for Fisher-weighted "
        "interpolation ((1-a) F0 theta0 + a F1 theta1) / ((1-a) F0 + a F1).",
    )
    fisher_floor: float = Field(
        default=1e-6, gt=0, description="Lower bound on Fisher values (--fisher)."
    )

    @field_validator("alpha", mode="before")
    @classmethod
    def _split_alpha(cls, v: object) -> object:
        """A comma list as given, or ranges START:STOP:STEP as scan's --alphas takes them."""
        items = v if isinstance(v, list) else [v]
        if any(isinstance(x, str) and ":" in x for x in items):
            from mergekit_sg.alphas import parse_alphas

            return parse_alphas(",".join(str(x) for x in items))
        return split_floats(v)

    @field_validator("alpha")
    @classmethod
    def _finite_alpha(cls, v: list[float]) -> list[float]:
        return [check_coefficient(a) for a in v]

    @field_validator("fisher", mode="before")
    @classmethod
    def _split_fisher(cls, v: object) -> object:
        items = [v] if isinstance(v, str) else v
        if isinstance(items, (list, tuple)):
            return [p.strip() for i in items for p in str(i).split(",") if p.strip()]
        return v


class InterpolateRun(RunOptions):
    """How to run WiSE-FT: RunOptions plus the output dtype and the open_clip config."""

    dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = Field(
        default=None, description="Output dtype of floating tensors (default: the fine-tuned's)."
    )
    open_clip_model: str | None = Field(
        default=None,
        description="open_clip architecture (e.g. ViT-B-16): writes open_clip_config.json.",
    )


class Delivery(BaseModel):
    """Where a finished merge goes besides the output folder."""

    model_config = ConfigDict(extra="forbid")

    push_to_hub: str | None = Field(
        default=None,
        description="After the merge completes, upload the output to this Hub repo (org/name) "
        "in one commit; the token comes from HF_TOKEN or the saved login.",
    )
    private: bool = Field(
        default=False, description="Create the --push-to-hub repo as private if it is new."
    )


_RULES = tuple(InterpolateRules.model_fields)
_RUN = tuple(InterpolateRun.model_fields)
_DELIVERY = tuple(Delivery.model_fields)


class InterpolateOptions(Delivery, InterpolateRun, InterpolateRules):
    """WiSE-FT: theta(alpha) = (1 - alpha) * theta_pretrained + alpha * theta_finetuned.

    The flat model the CLI flags, Python keyword arguments and recipe keys of `interpolate`
    are made from, composed of what to merge (`InterpolateRules`), how to run it
    (`InterpolateRun`) and delivery (`Delivery`): validated once, then split with `parts`."""

    model_config = ConfigDict(extra="forbid")

    def parts(self) -> tuple[InterpolateRules, InterpolateRun, Delivery]:
        d = self.model_dump()
        return (
            InterpolateRules.model_construct(**{k: d[k] for k in _RULES}),
            InterpolateRun.model_construct(**{k: d[k] for k in _RUN}),
            Delivery.model_construct(**{k: d[k] for k in _DELIVERY}),
        )
