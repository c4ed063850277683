"""mergekit-sg: give back the generality a fine-tuned foundation model lost (WiSE-FT, scans).

The public names below are imported on first use (PEP 562), so that `import mergekit_sg` and
the `sgmerge` command's start (`--help`, `--version`) do not pay for torch (1.5-3 s here)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mergekit_sg.errors import SgMergeError
from mergekit_sg.exports import lazy_exports
from mergekit_sg.version import __version__

# The merge subpackage now (its names are lazy too, so this is cheap): the import system binds
# a subpackage to its parent's attribute when it is first loaded, and that must not happen
# later, when it would displace `mergekit_sg.merge`, the function, with the package.
importlib.import_module("mergekit_sg.merge")
del globals()["merge"]  # that binding: `merge` is the function (see __getattr__)

if TYPE_CHECKING:
    from mergekit_sg.io.checkpoint import Checkpoint, open_checkpoint
    from mergekit_sg.merge.inspect import diff_checkpoints, inspect_checkpoint
    from mergekit_sg.merge.interpolate import InterpolateResult, interpolate
    from mergekit_sg.merge.math import lerp
    from mergekit_sg.merge.merge import MergeResult, merge
    from mergekit_sg.merge.options import InterpolateOptions

_LAZY = {
    "Checkpoint": "mergekit_sg.io.checkpoint",
    "open_checkpoint": "mergekit_sg.io.checkpoint",
    "diff_checkpoints": "mergekit_sg.merge.inspect",
    "inspect_checkpoint": "mergekit_sg.merge.inspect",
    "InterpolateResult": "mergekit_sg.merge.interpolate",
    "interpolate": "mergekit_sg.merge.interpolate",
    "lerp": "mergekit_sg.merge.math",
    "MergeResult": "mergekit_sg.merge.merge",
    "merge": "mergekit_sg.merge.merge",
    "InterpolateOptions": "mergekit_sg.merge.options",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

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
