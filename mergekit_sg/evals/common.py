"""What every built-in evaluator shares (its options are parsed by evals/specs.py): the primary
metric check, reading CSV/TSV/JSONL rows, the inference context (inference mode, autocast on GPU
only) and a progress bar that shows on a terminal and stays quiet elsewhere."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import EvalSpec


def check_primary(spec: EvalSpec, primary: str, metrics: tuple[str, ...]) -> str:
    if primary not in metrics:
        raise SgMergeError(
            f"--eval {spec.name}: primary={primary!r} is not a metric of {spec.kind} "
            f"({', '.join(metrics)})"
        )
    return primary


def existing(path: str | Path, spec: EvalSpec) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SgMergeError(f"--eval {spec.name}: {p} does not exist")
    return p


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV (header line) or JSONL/JSON file, as dicts."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SgMergeError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not all(isinstance(r, dict) for r in rows):
            raise SgMergeError(f"{path}: every JSON line must be an object")
        return rows
    delimiter = "\t" if suffix in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def column(rows: list[dict[str, Any]], key: str, path: object) -> list[Any]:
    """One column of `rows`; a missing key names the columns the file has."""
    if rows and key not in rows[0]:
        raise SgMergeError(
            f"{path}: no column {key!r} (have {', '.join(map(str, rows[0]))}); "
            f"name the right one in the --eval options"
        )
    try:
        return [r[key] for r in rows]
    except KeyError:
        raise SgMergeError(f"{path}: some rows lack {key!r}") from None


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """No autograd, and bfloat16 autocast only on CUDA (CPU runs stay in full precision)."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


@contextlib.contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; draws a transient rich bar only when stderr is a terminal."""
    if not sys.stderr.isatty() or total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
