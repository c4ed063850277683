"""Layer 5, path: scans of the merge coefficient, LMC barriers, selection of the best
alpha, and the reports (tables, CSV, plots).

The names below are imported on first use (PEP 562): importing the package, or one
light module of it (an options model), does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergekit_sg.exports import lazy_exports

if TYPE_CHECKING:
    from mergekit_sg.path.alphas import parse_alphas
    from mergekit_sg.path.barriers import PathBarrier, barrier, path_barrier
    from mergekit_sg.path.options import LmcOptions, ScanOptions
    from mergekit_sg.path.report import lmc_table, scan_table, write_lmc_outputs, write_scan_outputs
    from mergekit_sg.path.run import LmcReport, ScanReport, lmc, scan
    from mergekit_sg.path.selection import Selection, select
    from mergekit_sg.path.walk import EvalInfo, ScanPoint, ScanResult

_LAZY = {
    "parse_alphas": "mergekit_sg.path.alphas",
    "PathBarrier": "mergekit_sg.path.barriers",
    "barrier": "mergekit_sg.path.barriers",
    "path_barrier": "mergekit_sg.path.barriers",
    "lmc_table": "mergekit_sg.path.report",
    "scan_table": "mergekit_sg.path.report",
    "write_lmc_outputs": "mergekit_sg.path.report",
    "write_scan_outputs": "mergekit_sg.path.report",
    "LmcOptions": "mergekit_sg.path.options",
    "LmcReport": "mergekit_sg.path.run",
    "ScanOptions": "mergekit_sg.path.options",
    "ScanReport": "mergekit_sg.path.run",
    "lmc": "mergekit_sg.path.run",
    "scan": "mergekit_sg.path.run",
    "EvalInfo": "mergekit_sg.path.walk",
    "ScanPoint": "mergekit_sg.path.walk",
    "ScanResult": "mergekit_sg.path.walk",
    "Selection": "mergekit_sg.path.selection",
    "select": "mergekit_sg.path.selection",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "EvalInfo",
    "LmcOptions",
    "LmcReport",
    "PathBarrier",
    "ScanOptions",
    "ScanPoint",
    "ScanReport",
    "ScanResult",
    "Selection",
    "barrier",
    "lmc",
    "lmc_table",
    "parse_alphas",
    "path_barrier",
    "scan",
    "scan_table",
    "select",
    "write_lmc_outputs",
    "write_scan_outputs",
]
