"""mergekit-sg: give back the generality a fine-tuned foundation model lost (WiSE-FT, scans)."""

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.checkpoint import Checkpoint, open_checkpoint
from mergekit_sg.merge.inspect import diff_checkpoints, inspect_checkpoint
from mergekit_sg.merge.interpolate import InterpolateResult, interpolate
from mergekit_sg.merge.math import lerp
from mergekit_sg.merge.merge import MergeResult, merge
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.version import __version__

__all__ = [
    "Checkpoint",
    "InterpolateOptions",
    "InterpolateResult",
    "MergeResult",
    "SgMergeError",
    "__version__",
    "diff_checkpoints",
    "inspect_checkpoint",
    "interpolate",
    "lerp",
    "merge",
    "open_checkpoint",
]
