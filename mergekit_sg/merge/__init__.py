"""Layer 2, merge: the merge math, the plan that pairs and validates keys, the streaming
executor, and the key-level views of checkpoints (inspect, diff)."""

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
