"""The merge methods by name (mergekit's names where mergekit has the method)."""

from __future__ import annotations

from mergekit_sg.errors import SgMergeError
from mergekit_sg.merge.methods.base import Method
from mergekit_sg.merge.methods.geometric import ModelStock, Slerp
from mergekit_sg.merge.methods.linear import Fisher, Lerp, Linear
from mergekit_sg.merge.methods.task_arithmetic import (
    Breadcrumbs,
    BreadcrumbsTies,
    DareLinear,
    DareTies,
    TaskArithmetic,
    Ties,
)

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (
        Lerp,
        Linear,
        Fisher,
        TaskArithmetic,
        Ties,
        DareLinear,
        DareTies,
        Breadcrumbs,
        BreadcrumbsTies,
        Slerp,
        ModelStock,
    )
}


def get_method(name: str) -> Method:
    """The method called `name`; one line naming the known ones otherwise."""
    if name not in METHODS:
        raise SgMergeError(
            f"merge_method: unknown method {name!r} (known: {', '.join(sorted(METHODS))})"
        )
    return METHODS[name]()
