"""Layer 1, io: checkpoint references (paths, Hub ids, hf://, pkg:), lazy readers, the
streaming safetensors writer, atomic output, side files, model cards, the Hub client and
progress reporting.

The names below are imported on first use (PEP 562): importing the package, or one light
module of it (hashing, progress), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.io.atomic import TMP_TAG, atomic_directory, atomic_file, check_destination
    from mergekit_sg.io.card import RECIPE_FILE, CardExtras, Evidence, add_evidence, check_card
    from mergekit_sg.io.checkpoint import Checkpoint, TensorInfo, open_checkpoint
    from mergekit_sg.io.dtypes import TORCH_TO_ST, itemsize, user_dtype
    from mergekit_sg.io.hashing import file_sha256
    from mergekit_sg.io.hub import PushOptions, PushResult, plan_upload, preflight, push_folder
    from mergekit_sg.io.progress import NullProgress, Progress, make_progress
    from mergekit_sg.io.reference import Resolved, resolve
    from mergekit_sg.io.safetensors_write import OutSpec, StreamingWriter, index_json, plan_files
    from mergekit_sg.io.sidefiles import copy_side_files

_LAZY = {
    "TMP_TAG": "mergekit_sg.io.atomic",
    "atomic_directory": "mergekit_sg.io.atomic",
    "atomic_file": "mergekit_sg.io.atomic",
    "check_destination": "mergekit_sg.io.atomic",
    "RECIPE_FILE": "mergekit_sg.io.card",
    "CardExtras": "mergekit_sg.io.card",
    "Evidence": "mergekit_sg.io.card",
    "add_evidence": "mergekit_sg.io.card",
    "check_card": "mergekit_sg.io.card",
    "Checkpoint": "mergekit_sg.io.checkpoint",
    "TensorInfo": "mergekit_sg.io.checkpoint",
    "open_checkpoint": "mergekit_sg.io.checkpoint",
    "TORCH_TO_ST": "mergekit_sg.io.dtypes",
    "itemsize": "mergekit_sg.io.dtypes",
    "user_dtype": "mergekit_sg.io.dtypes",
    "file_sha256": "mergekit_sg.io.hashing",
    "PushOptions": "mergekit_sg.io.hub",
    "PushResult": "mergekit_sg.io.hub",
    "plan_upload": "mergekit_sg.io.hub",
    "preflight": "mergekit_sg.io.hub",
    "push_folder": "mergekit_sg.io.hub",
    "NullProgress": "mergekit_sg.io.progress",
    "Progress": "mergekit_sg.io.progress",
    "make_progress": "mergekit_sg.io.progress",
    "Resolved": "mergekit_sg.io.reference",
    "resolve": "mergekit_sg.io.reference",
    "OutSpec": "mergekit_sg.io.safetensors_write",
    "StreamingWriter": "mergekit_sg.io.safetensors_write",
    "index_json": "mergekit_sg.io.safetensors_write",
    "plan_files": "mergekit_sg.io.safetensors_write",
    "copy_side_files": "mergekit_sg.io.sidefiles",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "RECIPE_FILE",
    "TMP_TAG",
    "TORCH_TO_ST",
    "CardExtras",
    "Checkpoint",
    "Evidence",
    "NullProgress",
    "OutSpec",
    "Progress",
    "PushOptions",
    "PushResult",
    "Resolved",
    "StreamingWriter",
    "TensorInfo",
    "add_evidence",
    "atomic_directory",
    "atomic_file",
    "check_card",
    "check_destination",
    "copy_side_files",
    "file_sha256",
    "index_json",
    "itemsize",
    "make_progress",
    "open_checkpoint",
    "plan_files",
    "plan_upload",
    "preflight",
    "push_folder",
    "resolve",
    "user_dtype",
]
