"""The evaluator contract shared by scans, LMC probes and training loops.

An evaluator is called with a `LoadedModel` and returns named floats. It carries the user's
label (`name`), whether it measures speciality or generality (`role`), which of its metrics
summarises it (`primary`), and which metrics are better when lower (losses, perplexities)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from mergekit_sg.models.adapters import LoadedModel

Role = Literal["speciality", "generality", "other"]


@runtime_checkable
class Evaluator(Protocol):
    name: str
    role: Role
    primary: str
    lower_is_better: frozenset[str]

    def __call__(self, model: LoadedModel) -> dict[str, float]: ...


@dataclass
class EvalSpec:
    """`NAME=KIND:ARG[,key=value...]` as given to --eval, parsed."""

    name: str
    kind: str
    arg: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> Role:
        return role_of(self.name)


def role_of(name: str) -> Role:
    """'speciality', 'generality' (or 'generality.lee', 'speciality-imagenet') set the role."""
    head = name.split(".")[0].split("-")[0].split("_")[0].lower()
    if head in ("speciality", "specialty", "spec"):
        return "speciality"
    if head in ("generality", "gen"):
        return "generality"
    return "other"


@dataclass
class BaseEvaluator:
    """Fields every built-in evaluator has; subclasses implement `__call__`."""

    name: str
    role: Role = "other"
    primary: str = "accuracy"
    lower_is_better: frozenset[str] = frozenset()
