"""The training log: every record (config, step, eval, test, done) in one list, written as JSONL
(one JSON object per line) beside the model. Step records hold the mean of each loss term over
the micro-batches since the previous step record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

LOG_FILE = "train_log.jsonl"
Record = dict[str, Any]


def write_jsonl(path: Path, records: list[Record]) -> None:
    """One JSON object per line (values JSON cannot hold written as their str)."""
    with path.open("w") as f:
        for rec in records:
            f.write(json.dumps(rec, default=str) + "\n")


def write_json(path: Path, obj: Any) -> None:
    """Indented JSON with a final newline (the run summary)."""
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


Term = torch.Tensor | float


def add_terms(sums: dict[str, Term], terms: Mapping[str, Term]) -> None:
    """sums[k] += terms[k] for every term, in float64 (detached tensors stay on their device:
    no host sync per step; they are read when a record is written)."""
    for k, v in terms.items():
        v = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else v
        sums[k] = sums[k] + v if k in sums else v


def as_floats(sums: Mapping[str, Term]) -> dict[str, float]:
    """The sums as plain floats (for the log and the resumable state)."""
    return {k: float(v) for k, v in sums.items()}


class StepLog:
    """Sums of the loss terms since the last step record; every `every` steps (and at the
    last) one record {type: step, step, epoch, lr, <term>: mean}."""

    def __init__(self, log: list[Record], every: int, total: int) -> None:
        self.log, self.every, self.total = log, every, total
        self.sums: dict[str, Term] = {}
        self.count = 0

    def add(self, values: Mapping[str, Term]) -> None:
        add_terms(self.sums, values)
        self.count += 1

    def due(self, step: int, last: bool = False) -> bool:
        return step % self.every == 0 or step == self.total or last

    def flush(self, head: Record, tail: Record | None = None) -> None:
        """Append one record: `head`, the means of the terms, then `tail`; reset the sums."""
        if not self.count:
            return
        means = {k: v / self.count for k, v in as_floats(self.sums).items()}
        self.log.append({**head, **means, **(tail or {})})
        self.sums, self.count = {}, 0

    def record(self, values: Mapping[str, Term], step: int, epoch: int, lr: float) -> None:
        """add, then flush when the step is due (the one-micro-batch-per-step loops)."""
        self.add(values)
        if self.due(step):
            self.flush({"type": "step", "step": step, "epoch": epoch, "lr": lr})
