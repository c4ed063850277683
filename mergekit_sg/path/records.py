"""Machine-readable results: JSONL, one record per alpha and metric, with the toolkit version
and the checkpoints' hashes, so that runs resume and compare."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergekit_sg.version import TOOLKIT


@dataclass(frozen=True)
class Record:
    path: str  # which path: "A->B"
    alpha: float
    evaluator: str
    metric: str
    value: float
    role: str
    inputs: dict[str, str]  # role -> fingerprint (sha256 of the weight files)
    space: str = "weight"  # "weight": the merged model; "output": the two models' ensemble

    def key(self) -> tuple:
        return (
            self.path,
            round(self.alpha, 10),
            self.evaluator,
            _inputs_key(self.inputs),
            self.space,
        )


def _inputs_key(inputs: dict[str, str]) -> str:
    return json.dumps(inputs, sort_keys=True)


class RecordStore:
    """Append-only JSONL; knows which (path, alpha, evaluator, inputs) are already done."""

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.records: list[Record] = []
        if file is not None and file.exists():
            for line in file.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    self.records.append(
                        Record(
                            d["path"],
                            d["alpha"],
                            d["evaluator"],
                            d["metric"],
                            d["value"],
                            d["role"],
                            d["inputs"],
                            d.get("space", "weight"),
                        )
                    )

    def done(
        self,
        path: str,
        alpha: float,
        evaluator: str,
        inputs: dict[str, str],
        space: str = "weight",
    ) -> dict[str, float] | None:
        """The metrics already recorded for this point, or None."""
        key = (path, round(alpha, 10), evaluator, _inputs_key(inputs), space)
        found = {r.metric: r.value for r in self.records if r.key() == key}
        return found or None

    def add(self, records: list[Record], extra: dict[str, Any] | None = None) -> None:
        self.records.extend(records)
        if self.file is None:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file, "a") as f:
            for r in records:
                row = {
                    "toolkit": TOOLKIT,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "path": r.path,
                    "alpha": r.alpha,
                    "evaluator": r.evaluator,
                    "metric": r.metric,
                    "value": r.value,
                    "role": r.role,
                    "inputs": r.inputs,
                    "space": r.space,
                    **(extra or {}),
                }
                f.write(json.dumps(row) + "\n")
