"""Layer 2, merge: the merge math, the plan that pairs and validates keys, the streaming
executor, and the key-level views of checkpoints (inspect, diff).

The names below are imported on first use (PEP 562): importing the package costs nothing,
so `import mergekit_sg` stays free of torch until a name that needs it is used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.merge.fisher import fisher_lerp
    from mergekit_sg.merge.inspect import (
        DiffReport,
        Summary,
        diff_checkpoints,
        group_of,
        inspect_checkpoint,
    )
    from mergekit_sg.merge.interpolate import InterpolateResult
    from mergekit_sg.merge.math import lerp, relative_l2
    from mergekit_sg.merge.options import InterpolateOptions

_LAZY = {
    "fisher_lerp": "mergekit_sg.merge.fisher",
    "DiffReport": "mergekit_sg.merge.inspect",
    "Summary": "mergekit_sg.merge.inspect",
    "diff_checkpoints": "mergekit_sg.merge.inspect",
    "group_of": "mergekit_sg.merge.inspect",
    "inspect_checkpoint": "mergekit_sg.merge.inspect",
    "InterpolateResult": "mergekit_sg.merge.interpolate",
    "lerp": "mergekit_sg.merge.math",
    "relative_l2": "mergekit_sg.merge.math",
    "InterpolateOptions": "mergekit_sg.merge.options",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "DiffReport",
    "InterpolateOptions",
    "InterpolateResult",
    "Summary",
    "diff_checkpoints",
    "fisher_lerp",
    "group_of",
    "inspect_checkpoint",
    "lerp",
    "relative_l2",
]
