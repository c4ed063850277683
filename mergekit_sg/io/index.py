"""The one validation of a sharded checkpoint's index (`*.safetensors.index.json`,
`pytorch_model.bin.index.json`): a JSON object whose `weight_map` is a non-empty map of tensor
names to shard file names; every shard inside the index's folder (a relative name, no `..`, not
absolute, no symlink leading out; a Hub cache snapshot's links into its own `blobs/` are
inside) and a regular file (not the folder, a FIFO or a device). That every listed tensor is in
the shard named for it is checked by the reader once the shards' headers are read."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.safetensors_read import MAX_DEPTH, json_depth

MAX_INDEX = 100_000_000  # bytes; an index of a million tensors is well under this


@dataclass(frozen=True)
class Index:
    """A validated index: tensor name -> shard path, and the shards in sorted order."""

    path: Path
    weight_map: dict[str, Path]
    shards: list[Path]


def read_index(index: Path) -> Index:
    """Parse and validate `index`; any broken rule is one SgMergeError naming the file."""
    raw = _read(index)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise SgMergeError(f"{index}: malformed index (not JSON: {e})") from None
    except RecursionError:
        raise SgMergeError(f"{index}: malformed index (JSON nested too deeply)") from None
    if json_depth(doc) > MAX_DEPTH:
        raise SgMergeError(f"{index}: malformed index (JSON nested too deeply)")
    if not isinstance(doc, dict) or "weight_map" not in doc:
        raise SgMergeError(f"{index}: malformed index (no weight_map)")
    weight_map = doc["weight_map"]
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise SgMergeError(f"{index}: malformed index (weight_map must map tensor names to files)")
    if not weight_map:
        raise SgMergeError(f"{index}: the index lists no tensors (weight_map is empty)")
    roots = _allowed_roots(index.parent)
    files = {rel: shard_path(index, rel, roots) for rel in dict.fromkeys(weight_map.values())}
    return Index(index, {k: files[v] for k, v in weight_map.items()}, sorted(set(files.values())))


def _read(index: Path) -> bytes:
    try:
        with open(index, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SgMergeError(f"{index}: not a regular file")
            raw = f.read(MAX_INDEX + 1)
    except OSError as e:
        raise SgMergeError(f"{index}: cannot read the index ({e.strerror or e})") from None
    if len(raw) > MAX_INDEX:
        raise SgMergeError(f"{index}: index larger than {MAX_INDEX} bytes")
    return raw


def _allowed_roots(folder: Path) -> list[Path]:
    """Where shard files may really live: the folder, and for a Hub cache snapshot
    (REPO/snapshots/COMMIT) the repo's `blobs/` that its files link to."""
    roots = [folder.resolve()]
    if folder.resolve().parent.name == "snapshots":
        roots.append(folder.resolve().parent.parent / "blobs")
    return roots


def shard_path(index: Path, rel: str, roots: list[Path]) -> Path:
    """The shard `rel` named by `index`, refused unless it is a regular file inside the folder."""
    parts = PurePosixPath(rel).parts
    if (
        not rel
        or "\x00" in rel
        or "\\" in rel
        or PurePosixPath(rel).is_absolute()
        or any(p in ("..", ".") for p in parts)
        or not parts
    ):
        raise SgMergeError(
            f"{index}: shard name {rel!r} must be a file name inside the index's folder"
        )
    f = index.parent.joinpath(*parts)
    real = f.resolve()
    if not any(real == r or r in real.parents for r in roots):
        raise SgMergeError(f"{index}: shard {rel!r} leads outside the index's folder")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise SgMergeError(f"{index}: names shard {rel!r}, which is missing") from None
    if not stat.S_ISREG(mode):
        raise SgMergeError(f"{index}: shard {rel!r} is not a regular file")
    return f
