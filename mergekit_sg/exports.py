"""Lazy public names for a package's `__init__` (PEP 562): each name is imported from its
module when first used, so importing the package costs nothing (torch alone is 1.5-3 s)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package` for names that live in other modules
    (`table`: name -> module, or "module:attribute" for a name that is another name there):
    the first use of a name imports its module and keeps the name in the package, so later
    uses are plain attribute reads."""
    space = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = table[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        space[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*space, *table})

    return __getattr__, __dir__
