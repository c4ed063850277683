"""Scans and LMC probes sent to the run's trackers (TensorBoard, MLflow), from the same rows as
results.csv, so a tracker shows exactly what the CSV holds:

    scan: at step i (the i-th alpha, endpoints included, in increasing order) every column of
          the row: `alpha`, `<evaluator>.<metric>`, `speciality`, `generality`, `hm`; the
          output-space ensemble's rows as `ensemble/<column>`; `selected_alpha` at the
          selected alpha's step, and the reason as a note
    lmc:  per path P (`A->B`; MLflow spells it `A_to_B`), at step i: `P/<column>`, and
          `P/barrier` (its height) at the step of the barrier's alpha

The options (and the inputs with their fingerprints) are the run's parameters. The curves are
logged when the walk is complete (a resumed scan logs its whole curve)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mergekit_sg.io.tracking import Tracker, flatten, open_tracker
from mergekit_sg.path.run import LmcReport, ScanReport
from mergekit_sg.path.walk import ScanResult


def scan_tracker(
    opts: BaseModel, out: Path, command: str, inputs: Mapping[str, Any] | None = None
) -> Tracker:
    """The trackers of a scan or lmc run writing into `out`, with its parameters logged:
    opened before the walk, so a tracking server that cannot be reached fails first."""
    tracker = open_tracker(opts, out, command)  # type: ignore[arg-type]
    if tracker:
        tracker.params(flatten({"options": opts.model_dump(), "inputs": dict(inputs or {})}))
    return tracker


def _index(result: ScanResult, alpha: float) -> int:
    return min(range(len(result.points)), key=lambda i: abs(result.points[i].alpha - alpha))


def track_scan(tracker: Tracker, report: ScanReport) -> None:
    """The scan's rows, its ensemble rows and its selection (see the module)."""
    if not tracker:
        return
    result = report.result
    for i, row in enumerate(result.rows()):
        tracker.metrics(row, i)
    if result.outputs:
        ens = ScanResult(result.path, result.evals, result.outputs).rows()
        for i, row in enumerate(ens):
            tracker.metrics({f"ensemble/{k}": v for k, v in row.items()}, i)
    sel = report.selection
    if sel is not None and result.points:
        tracker.metrics({"selected_alpha": sel.alpha}, _index(result, sel.alpha))
        tracker.text("selection", f"alpha = {sel.alpha:g}: {sel.reason}")
    elif report.note:
        tracker.text("selection", f"no alpha selected: {report.note}")


def track_lmc(tracker: Tracker, report: LmcReport) -> None:
    """Each path's rows and its barrier (see the module)."""
    if not tracker:
        return
    for result in report.paths:
        for i, row in enumerate(result.rows()):
            tracker.metrics({f"{result.path}/{k}": v for k, v in row.items()}, i)
    for b in report.barriers:
        at = min(range(len(b.alphas)), key=lambda i: abs(b.alphas[i] - b.at)) if b.alphas else 0
        tracker.metrics({f"{b.path}/barrier": b.height}, at)
        tracker.text(f"{b.path} barrier", b.sentence())
