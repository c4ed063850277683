"""Layer 5, path: scans of the merge coefficient, LMC barriers, selection of the best
alpha, and the reports (tables, CSV, plots)."""

from mergekit_sg.path.alphas import parse_alphas
from mergekit_sg.path.lmc import PathBarrier, barrier, path_barrier
from mergekit_sg.path.report import lmc_table, scan_table, write_lmc_outputs, write_scan_outputs
from mergekit_sg.path.run import LmcOptions, LmcReport, ScanOptions, ScanReport, lmc, scan
from mergekit_sg.path.scan import EvalInfo, ScanPoint, ScanResult
from mergekit_sg.path.select import Selection, select

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
