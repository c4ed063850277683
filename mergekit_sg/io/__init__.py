"""Layer 1, io: checkpoint references (paths, Hub ids, hf://, pkg:), lazy readers, the
streaming safetensors writer, atomic output, side files, model cards, the Hub client and
progress reporting."""

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
