"""The training log, as it grows, sent to the run's trackers (TensorBoard, MLflow): the JSONL
records stay the source, so what a tracker shows is what the log holds.

    config -> parameters (nested options flattened: `options.lr`)
    step   -> train/<term> (each loss term's mean since the last record), train/lr,
              train/grad_norm, train/epoch, at the record's step
    eval   -> eval/<evaluator>.<metric> (or eval/val_accuracy of a prompt run), and
              eval/epoch, at the step the epoch ended
    test   -> test/<split> at the last step
    done   -> best_epoch at the last step"""

from __future__ import annotations

from typing import Any

from mergekit_sg.io.tracking import Tracker, flatten
from mergekit_sg.tune.core.log import Record

STEP_META = ("type", "step", "epoch", "micro_batches", "reg", "reg_weight", "reduction")


def record_metrics(rec: Record) -> dict[str, Any]:
    """The scalars of one training record, named as the trackers show them (see the module)."""
    kind = rec.get("type")
    if kind == "step":
        out = {f"train/{k}": v for k, v in rec.items() if k not in STEP_META}
        out["train/epoch"] = rec.get("epoch")
        return out
    if kind == "eval":
        out = {"eval/epoch": rec.get("epoch")}
        if isinstance(rec.get("metrics"), dict):
            for name, ms in rec["metrics"].items():
                out.update({f"eval/{name}.{m}": v for m, v in ms.items()})
        out.update({f"eval/{k}": v for k, v in rec.items() if k not in ("type", "step", "epoch")})
        return {k: v for k, v in out.items() if k != "eval/metrics"}
    if kind == "test":
        return {f"test/{k}": v for k, v in rec.items() if k != "type"}
    if kind == "done":
        return {"best_epoch": rec.get("best_epoch")}
    return {}


class LogFollower:
    """Call with the run's log after it grows: the records not sent yet go to the tracker
    (`sent`: how many were sent before, e.g. by the run a resumed one continues)."""

    def __init__(self, tracker: Tracker, sent: int = 0) -> None:
        self.tracker, self.sent = tracker, sent
        self.step = 0

    def __call__(self, log: list[Record]) -> None:
        if not self.tracker:
            self.sent = len(log)
            return
        for rec in log[self.sent :]:
            self.send(rec)
        self.sent = len(log)

    def send(self, rec: Record) -> None:
        if rec.get("type") == "config":
            params = flatten({k: v for k, v in rec.items() if k != "type"})
            self.tracker.params(params)
            return
        if isinstance(rec.get("step"), int):
            self.step = rec["step"]
        self.tracker.metrics(record_metrics(rec), self.step)
