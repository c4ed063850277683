"""The options of the path commands, `scan`, `lmc` and `soup`: one pydantic model each, driving
the CLI flags, the Python keyword arguments and YAML recipes. Kept apart from the code that
runs them (and the package's face lazy), so that `sgmerge scan --help` imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mergekit_sg.io.tracking import (
    ReportToList,
    experiment_field,
    logging_dir_field,
    report_to_field,
)
from mergekit_sg.merge.options import RunOptions

Rule = Literal["max-hm", "max-generality", "max-speciality"]


class PathOptions(BaseModel):
    """What every walk along a linear path needs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="Model spec: open_clip:ARCH, hf[:TASK] or python:module:function."
    )
    eval: list[str] = Field(
        default=[],
        description="NAME=KIND:ARG[,key=value] (repeatable); a NAME starting with "
        "speciality or generality sets the role.",
    )
    device: str = Field(default="auto", description="cpu, cuda[:N] or auto (a GPU if any).")
    compute_dtype: Literal["float32", "float64"] = Field(
        default="float32", description="Dtype of the interpolation arithmetic."
    )
    resume: bool = Field(
        default=True, description="Skip alphas already recorded in OUT/results.jsonl."
    )
    ray: str | None = Field(
        default=None,
        description="Split the alphas across Ray workers: auto (the running cluster), "
        "local (start one here) or ADDRESS.",
    )
    ray_cpus: int = Field(
        default=1, ge=1, description="CPUs (threads) each Ray worker uses on a CPU run."
    )


class ScanOptions(PathOptions):
    """sgmerge scan: speciality and generality along pretrained -> fine-tuned."""

    alphas: str = Field(
        default="0:1:0.1",
        description="START:STOP:STEP or a comma list.",
        json_schema_extra={"metavar": "VALUES"},
    )
    select: Rule = Field(default="max-hm", description="max-hm, max-generality or max-speciality.")
    min_speciality: str | None = Field(
        default=None,
        description="Floor for max-generality: absolute, or 0.98x / 98% of the fine-tuned's.",
    )
    min_generality: str | None = Field(
        default=None,
        description="Floor for max-speciality: absolute, or 0.9x / 90% of the pretrained's.",
    )
    write_best: str | None = Field(
        default=None, description="Write the selected alpha's model here."
    )
    force: bool = Field(default=False, description="Replace an existing --write-best destination.")
    config: str | None = Field(
        default=None,
        description="A mergekit config to scan instead of PRETRAINED FINETUNED: its --param "
        "coefficient takes each value (no PRETRAINED FINETUNED then).",
    )
    param: list[str] = Field(
        default=[],
        description="NAME=VALUES with --config (e.g. lambda=0:1:0.1): the coefficient scanned; "
        "a task-vector method's lambda walks a linear path (a WiSE-FT point's cost), other "
        "coefficients are merged again per value.",
    )
    ensemble: Literal["probs", "logits"] | None = Field(
        default=None,
        description="Also score, at every alpha, the output-space ensemble of the two models "
        "(both held live): probs (softmax probabilities averaged; the default of a bare "
        "--ensemble) or logits.",
    )
    report_to: ReportToList = report_to_field()
    logging_dir: str | None = logging_dir_field()
    experiment: str | None = experiment_field()


class LmcOptions(PathOptions):
    """sgmerge lmc: loss along the path(s) and the barrier heights."""

    alphas: str = Field(
        default="0:1:0.05",
        description="START:STOP:STEP or a comma list.",
        json_schema_extra={"metavar": "VALUES"},
    )
    metric: str | None = Field(
        default=None, description="Metric to take barriers on (default: loss/nll)."
    )
    report_to: ReportToList = report_to_field()
    logging_dir: str | None = logging_dir_field()
    experiment: str | None = experiment_field()


class SoupOptions(RunOptions):
    """sgmerge soup FT1 FT2 ... -o OUT: the uniform soup, or with --greedy the greedy one."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        description="Model spec for --eval: open_clip:ARCH, hf[:TASK] or python:module:function.",
    )
    eval: list[str] = Field(
        default=[],
        description="NAME=KIND:ARG[,key=value] (repeatable): the held-out evaluator(s); the score "
        "is the mean of their primary metrics (lower-is-better ones negated).",
    )
    greedy: bool = Field(
        default=False,
        description="Greedy soup: add each candidate (best first) only if the soup improves.",
    )
    dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = Field(
        default=None, description="Output dtype of floating tensors (default: the inputs')."
    )
    ray: str | None = Field(
        default=None,
        description="Evaluate the candidates and soup trials as Ray jobs: auto (the running "
        "cluster), local (start one here) or ADDRESS.",
    )
    ray_cpus: int = Field(
        default=1, ge=1, description="CPUs (threads) each Ray worker uses on a CPU run."
    )
