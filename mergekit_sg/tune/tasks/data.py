"""Training data for `finetune` and `fisher`, read into plain examples:

- text classification: a CSV/TSV/JSONL file (text and label columns) or a built-in set
  (`rotten-tomatoes` = the demo's 2000 training reviews, any name in evals.datasets);
- causal-LM text: a .txt file (one text per line) or CSV/JSONL with a `text` column, or
  prompt + completion columns (the prompt can be masked out of the loss);
- images for open_clip: a folder with one subfolder per class.

Labels are class indices or names; names are mapped through `labels` (index order) or, when not
given, the sorted set of names in the file."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergekit_sg.errors import SgMergeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
BUILTIN_ALIASES = {"rotten-tomatoes": "rotten-tomatoes-train"}


@dataclass(frozen=True)
class TextExample:
    text: str
    label: int


@dataclass(frozen=True)
class LmExample:
    prompt: str  # masked out of the loss when asked; may be empty
    completion: str


@dataclass(frozen=True)
class ImageExample:
    path: Path
    label: int


@dataclass
class TaskData:
    """Examples and the label names (index order; empty for causal LMs)."""

    examples: list[Any]
    labels: list[str]
    source: str


def subset(examples: list[Any], size: int | None, seed: int) -> list[Any]:
    """A seeded random subset of `size` examples (all, in order, when size is None)."""
    if size is None or size >= len(examples):
        return list(examples)
    idx = sorted(random.Random(seed).sample(range(len(examples)), size))
    return [examples[i] for i in idx]


def map_labels(raw: list[Any], names: list[str], source: str) -> tuple[list[int], list[str]]:
    """Raw labels (indices or names) -> indices, and the label names in index order."""
    if names:
        index = {n: i for i, n in enumerate(names)}
        out = []
        for v in raw:
            s = str(v).strip()
            if s in index:
                out.append(index[s])
            elif s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
                out.append(int(s))
            else:
                raise SgMergeError(f"{source}: label {s!r} is not in --labels {','.join(names)}")
        return out, list(names)
    strs = [str(v).strip() for v in raw]
    if all(s.isdigit() for s in strs):
        ints = [int(s) for s in strs]
        return ints, [str(i) for i in range(max(ints) + 1)]
    found = sorted(set(strs))
    index = {n: i for i, n in enumerate(found)}
    return [index[s] for s in strs], found


def _rows(path: Path) -> list[dict[str, Any]]:
    from mergekit_sg.evals.common import read_rows

    rows = read_rows(path)
    if not rows:
        raise SgMergeError(f"{path}: no rows")
    return rows


def _column(rows: list[dict[str, Any]], key: str, path: Path, flag: str) -> list[Any]:
    if key not in rows[0]:
        have = ", ".join(map(str, rows[0]))
        raise SgMergeError(f"{path}: no column {key!r} (have {have}); name it with {flag}")
    try:
        return [r[key] for r in rows]
    except KeyError:
        raise SgMergeError(f"{path}: some rows lack {key!r}") from None


def classification_data(
    data: str,
    text_column: str = "text",
    label_column: str = "label",
    labels: list[str] | None = None,
) -> TaskData:
    """Texts with class labels from a file or a built-in set."""
    from mergekit_sg.evals.datasets import CLASSIFICATION, classification_set

    name = BUILTIN_ALIASES.get(data, data)
    if name in CLASSIFICATION and not Path(data).exists():
        examples, names = classification_set(name)
        if labels and sorted(labels) != sorted(names):
            raise SgMergeError(f"--labels for {data} must name {', '.join(names)}")
        order = list(labels or names)
        remap = [order.index(n) for n in names]
        out = [TextExample(e.text, remap[e.label]) for e in examples]
        return TaskData(out, order, name)
    path = _existing(data)
    rows = _rows(path)
    texts = [str(t) for t in _column(rows, text_column, path, "--text-column")]
    raw = _column(rows, label_column, path, "--label-column")
    ids, names = map_labels(raw, list(labels or []), str(path))
    return TaskData([TextExample(t, y) for t, y in zip(texts, ids, strict=True)], names, str(path))


def lm_data(
    data: str,
    text_column: str = "text",
    prompt_column: str = "prompt",
    completion: str = "completion",
) -> TaskData:
    """Causal-LM examples: whole texts, or prompt + completion pairs."""
    path = _existing(data)
    if path.suffix.lower() == ".txt":
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return TaskData([LmExample("", ln) for ln in lines], [], str(path))
    rows = _rows(path)
    if prompt_column in rows[0] and completion in rows[0]:
        prompts = _column(rows, prompt_column, path, "--prompt-column")
        comps = _column(rows, completion, path, "--completion-column")
        out = [LmExample(str(p), str(c)) for p, c in zip(prompts, comps, strict=True)]
    else:
        out = [LmExample("", str(t)) for t in _column(rows, text_column, path, "--text-column")]
    if not out:
        raise SgMergeError(f"{path}: no examples")
    return TaskData(out, [], str(path))


def image_folder(data: str, labels: list[str] | None = None) -> TaskData:
    """Images in DATA/CLASS/*.jpg; classes sorted by folder name unless --labels orders them."""
    root = _existing(data)
    if not root.is_dir():
        raise SgMergeError(f"{root}: open_clip training data is a folder with one folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if labels:
        missing = sorted(set(classes) - set(labels))
        if missing:
            raise SgMergeError(f"{root}: class folder(s) {', '.join(missing)} not in --labels")
        classes = list(labels)
    out = []
    for i, c in enumerate(classes):
        folder = root / c
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                out.append(ImageExample(f, i))
    if not out:
        raise SgMergeError(f"{root}: no images found (expected {root}/CLASS/*.jpg)")
    return TaskData(out, classes, str(root))


def _existing(data: str) -> Path:
    p = Path(data).expanduser()
    if not p.exists():
        raise SgMergeError(f"--data {data}: no such file or folder")
    return p
