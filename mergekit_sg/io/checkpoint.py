"""A checkpoint as a lazy state-dict tree: names, shapes and dtypes are known at open; tensor
bytes are read when asked for, in whole or by element range, and not kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.index import Index, read_index
from mergekit_sg.io.lazy import Checkpoint, TensorInfo
from mergekit_sg.io.pickle_read import load_pickle_state_dict
from mergekit_sg.io.reference import Resolved, resolve
from mergekit_sg.io.safetensors_read import SafetensorsFile, open_regular

# Prefixes that wrappers add to every key: DataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Safetensors metadata key under which our writer records tied names (alias -> kept name).
TIED_META = "sgmerge.tied"

DIR_LAYOUTS = (
    ("model.safetensors.index.json", "safetensors-sharded"),
    ("model.safetensors", "safetensors"),
    ("open_clip_model.safetensors", "safetensors"),
    ("pytorch_model.bin.index.json", "pytorch-sharded"),
    ("pytorch_model.bin", "pytorch"),
    ("open_clip_pytorch_model.bin", "pytorch"),
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Weight files beside a model folder's main weights that belong to the model, with the
# metadata file that goes with each: an open_clip classifier's head (see
# models/clip_classifier.py). Opened with `open_checkpoint(..., side_weights=True)`, their
# tensors are part of the checkpoint, tagged with the file (`TensorInfo.group`), so a merge
# merges them by the same plan in the same pass and writes them back to a file of that name.
SIDE_WEIGHT_FILES = {"classifier_head.safetensors": "classifier_head.json"}


def open_checkpoint(ref: str | Path | Checkpoint, side_weights: bool = False) -> Checkpoint:
    """Open a checkpoint reference lazily: only headers are read here. With `side_weights`,
    a folder's SIDE_WEIGHT_FILES beside its weights are part of it (group = the file name)."""
    if isinstance(ref, Checkpoint):
        return ref
    resolved = resolve(str(ref))
    path = resolved.path
    index = None
    if path.is_dir():
        fmt, files, index = _dir_layout(path)
    else:
        fmt, files = _file_format(path), [path]
    if fmt.startswith("safetensors"):
        ck = _open_safetensors(resolved, fmt, files, index)
    elif fmt == "gguf":  # dequantised per tensor on read (io/gguf_read.py)
        from mergekit_sg.io.gguf_read import open_gguf

        return open_gguf(resolved)
    else:
        ck = _open_pickles(resolved, fmt, files, index)
    if side_weights and path.is_dir():
        try:
            add_side_weights(ck, path)
        except BaseException:
            ck.close()
            raise
    return ck


def add_side_weights(ck: Checkpoint, path: Path | None = None) -> Checkpoint:
    """Add the SIDE_WEIGHT_FILES beside `ck`'s folder to it (once); returns `ck`."""
    path = path or ck.side_dir
    if path is None:
        return ck
    for name in SIDE_WEIGHT_FILES:
        f = path / name
        if not f.is_file() or f in ck.files:
            continue
        reader = SafetensorsFile(f)
        clash = [n for n in reader.entries if n in ck.tensors or n in ck.aliases]
        if clash:
            reader.close()
            raise SgMergeError(f"{f}: tensor {clash[0]!r} is also in the model's weights")
        idx = len(ck.files)
        ck.files.append(f)
        ck._st.append(reader)
        for n, e in reader.entries.items():
            ck.tensors[n] = TensorInfo(n, e.shape, e.dtype, idx, e.begin, n, name)
    return ck


def _check_index(index: Index | None, held: dict[Path, set[str]]) -> None:
    """Every tensor the index lists is in the shard it names (`held`: file -> its names)."""
    if index is None:
        return
    for name, shard in index.weight_map.items():
        if name not in held.get(shard, ()):
            raise SgMergeError(
                f"{index.path}: lists tensor {name!r} in {shard.name}, which does not hold it"
            )


def _dir_layout(path: Path) -> tuple[str, list[Path], Index | None]:
    for name, fmt in DIR_LAYOUTS:
        f = path / name
        if f.exists():
            if name.endswith(".index.json"):
                index = read_index(f)
                return fmt, index.shards, index
            return fmt, [f], None
    singles = sorted(path.glob("*.safetensors")) or sorted(
        p for s in PICKLE_SUFFIXES for p in path.glob(f"*{s}")
    )
    if len(singles) == 1:
        return _file_format(singles[0]), singles, None
    looked = ", ".join(n for n, _ in DIR_LAYOUTS)
    if singles:
        raise SgMergeError(
            f"{path}: several weight files and no index; pass one file ({singles[0].name}, ...)"
        )
    raise SgMergeError(f"{path}: no weights found (looked for {looked}, *.safetensors, *.bin)")


def _file_format(path: Path) -> str:
    fd = open_regular(path)
    try:
        head = os.pread(fd, 9, 0)
    finally:
        os.close(fd)
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"GGUF":
        return "gguf"
    if path.suffix == ".safetensors":
        return "safetensors"  # let the parser report what is wrong with it
    if path.suffix in PICKLE_SUFFIXES or head[:2] == b"PK" or head[:1] == b"\x80":
        return "pytorch"
    raise SgMergeError(
        f"{path}: unknown checkpoint format (expected .safetensors, .bin, .pt, .pth, .gguf)"
    )


def _strip_prefix(names: list[str]) -> str:
    for prefix in WRAPPER_PREFIXES:
        if names and all(n.startswith(prefix) for n in names):
            return prefix
    return ""


def _open_safetensors(
    resolved: Resolved, fmt: str, files: list[Path], index: Index | None = None
) -> Checkpoint:
    readers: list[SafetensorsFile] = []
    try:
        for f in files:
            readers.append(SafetensorsFile(f))
        _check_index(index, {f: set(r.entries) for f, r in zip(files, readers, strict=True)})
        return _safetensors_checkpoint(resolved, fmt, files, readers)
    except BaseException:
        for r in readers:
            r.close()
        raise


def _safetensors_checkpoint(
    resolved: Resolved, fmt: str, files: list[Path], readers: list[SafetensorsFile]
) -> Checkpoint:
    raw = [(name, i, e) for i, r in enumerate(readers) for name, e in r.entries.items()]
    prefix = _strip_prefix([n for n, _, _ in raw])
    tensors: dict[str, TensorInfo] = {}
    for name, i, e in raw:
        key = name[len(prefix) :]
        if key in tensors:
            raise SgMergeError(f"{files[i]}: tensor {key!r} appears in more than one shard")
        tensors[key] = TensorInfo(key, e.shape, e.dtype, i, e.begin, name)
    metadata = dict(readers[0].metadata) if readers else {}
    aliases = tied_aliases(metadata.get(TIED_META), tensors, files[0]) if readers else {}
    return Checkpoint(resolved, fmt, files, tensors, aliases, metadata, _st=list(readers))


def tied_aliases(raw: str | None, stored: dict[str, TensorInfo], where: Path) -> dict[str, str]:
    """The `sgmerge.tied` metadata (JSON alias -> stored name), validated: an object of strings,
    no alias that is also stored (a name must not be given twice), every target stored."""
    if raw is None:
        return {}
    bad = f"{where}: bad {TIED_META} metadata"
    try:
        tied = json.loads(raw)
    except (ValueError, RecursionError):
        raise SgMergeError(f"{bad} (not JSON)") from None
    if not isinstance(tied, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tied.items()
    ):
        raise SgMergeError(f"{bad} (must be an object of alias -> stored tensor name)")
    for alias, target in tied.items():
        if alias in stored:
            raise SgMergeError(f"{bad} (alias {alias!r} is also a stored tensor)")
        if target not in stored:
            raise SgMergeError(f"{bad} (alias {alias!r} names {target!r}, which is not stored)")
    return tied


def _open_pickles(
    resolved: Resolved, fmt: str, files: list[Path], index: Index | None = None
) -> Checkpoint:
    fds: list[int] = []
    try:
        for f in files:
            fds.append(open_regular(f))
        return _pickle_checkpoint(resolved, fmt, files, fds, index)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _pickle_checkpoint(
    resolved: Resolved, fmt: str, files: list[Path], fds: list[int], index: Index | None
) -> Checkpoint:
    state: dict[str, torch.Tensor] = {}
    held: dict[Path, set[str]] = {}
    for f, fd in zip(files, fds, strict=True):
        part = load_pickle_state_dict(f, fd)
        held[f] = set(part)
        for k, v in part.items():
            if k in state:
                raise SgMergeError(f"{f}: tensor {k!r} appears in more than one shard")
            state[k] = v
    _check_index(index, held)
    prefix = _strip_prefix(list(state))
    tensors: dict[str, TensorInfo] = {}
    pt: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for raw_name, t in state.items():
        key = raw_name[len(prefix) :]
        ident = _storage_identity(t)
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        if not t.is_contiguous():
            t = t.contiguous()
        pt[raw_name] = t
        tensors[key] = TensorInfo(key, tuple(t.shape), t.dtype, 0, -1, raw_name)
    return Checkpoint(
        resolved, fmt, files, tensors, aliases, {}, _st=[None] * len(files), _pt=pt, _fds=fds
    )


def _storage_identity(t: torch.Tensor) -> tuple | None:
    """Tensors with the same identity share storage exactly: they are tied."""
    if t.numel() == 0:
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
