"""Reports of scans and LMC probes: rich tables for the terminal, CSV, and PNG plots (the
metric-vs-alpha curves, the WiSE-FT speciality-vs-generality figure, LMC loss curves)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.table import Table

from mergekit_sg.path.run import LmcReport, ScanReport


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def scan_table(report: ScanReport) -> Table:
    """alpha, each evaluator's primary metric, speciality, generality, harmonic mean."""
    r = report.result
    chosen = report.selection.alpha if report.selection else None
    t = Table(title="alpha scan (0 = pretrained, 1 = fine-tuned)")
    t.add_column("alpha", justify="right")
    for e in r.evals:
        arrow = "↓" if e.primary in e.lower_is_better else "↑"
        t.add_column(f"{e.name}\n{e.primary} {arrow}", justify="right")
    for col in ("speciality", "generality", "HM"):
        t.add_column(col, justify="right")
    for p in r.points:
        mark = " *" if chosen is not None and abs(p.alpha - chosen) < 1e-12 else ""
        cells = [f"{p.alpha:g}{mark}"]
        cells += [_fmt(p.metrics.get(e.name, {}).get(e.primary)) for e in r.evals]
        cells += [_fmt(r.score(p, "speciality")), _fmt(r.score(p, "generality")), _fmt(r.hm(p))]
        t.add_row(*cells, style="bold green" if mark else None)
    _output_rows(t, report)
    return t


def _output_rows(t: Table, report: ScanReport) -> None:
    """`scan --ensemble`: the output-space ensemble's rows below the weight-space ones, each
    evaluator's score with the ensemble's inference cost (two forward passes) beside it."""
    r = report.result
    if not r.outputs:
        return
    t.add_section()
    t.add_row(f"output-space ensemble ({r.mix}): score [seconds for two forward passes]")
    for p in r.outputs:
        cells = [f"{p.alpha:g} ens"]
        for e in r.evals:
            m = p.metrics.get(e.name, {})
            cost = m.get("seconds")
            cells.append(_fmt(m.get(e.primary)) + (f" [{cost:.2f}s]" if cost is not None else ""))
        cells += [_fmt(r.score(p, "speciality")), _fmt(r.score(p, "generality")), _fmt(r.hm(p))]
        t.add_row(*cells, style="cyan")


def write_scan_outputs(report: ScanReport, out: Path) -> list[Path]:
    """results.csv, summary.json, metrics.png and tradeoff.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = report.result.all_rows() if report.result.outputs else report.result.rows()
    cols = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    sel = report.selection
    summary = {
        "inputs": report.refs,
        "fingerprints": report.inputs,
        "selected_alpha": sel.alpha if sel else None,
        "rule": sel.rule if sel else None,
        "reason": sel.reason if sel else report.note,
        "rows": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [out / "results.csv", out / "summary.json", *_scan_plots(report, out)]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scan_plots(report: ScanReport, out: Path) -> list[Path]:
    plt = _plt()
    r = report.result
    alphas = [p.alpha for p in r.points]
    n = len(r.evals)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, e in zip(axes[0], r.evals, strict=True):
        ys = [p.metrics.get(e.name, {}).get(e.primary) for p in r.points]
        ax.plot(alphas, ys, "o-", color="tab:blue" if e.role == "speciality" else "tab:orange")
        ax.set_title(f"{e.name} ({e.role})", fontsize=9)
        ax.set_xlabel("alpha")
        ax.set_ylabel(e.primary)
        if report.selection:
            ax.axvline(report.selection.alpha, color="gray", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    files = [out / "metrics.png"]
    fig.savefig(files[0], dpi=120)
    plt.close(fig)
    pts = [(p.alpha, r.score(p, "speciality"), r.score(p, "generality")) for p in r.points]
    pts = [(a, s, g) for a, s, g in pts if s is not None and g is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        ax.plot([g for _, _, g in pts], [s for _, s, _ in pts], "o-", color="tab:purple")
        for a, s, g in pts:
            ax.annotate(f"{a:g}", (g, s), textcoords="offset points", xytext=(4, 4), fontsize=8)
        a0 = min(pts)
        a1 = max(pts)
        ax.plot(a0[2], a0[1], "s", ms=10, color="tab:orange", label="zero-shot / pretrained (α=0)")
        ax.plot(a1[2], a1[1], "D", ms=9, color="tab:blue", label="fine-tuned (α=1)")
        if report.selection:
            best = min(pts, key=lambda x: abs(x[0] - report.selection.alpha))
            ax.plot(
                best[2], best[1], "*", ms=16, color="tab:green", label=f"selected α={best[0]:g}"
            )
        ax.set_xlabel("generality")
        ax.set_ylabel("speciality")
        ax.set_title("WiSE-FT: speciality vs generality along alpha", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        _output_curve(ax, report)
        fig.tight_layout()
        files.append(out / "tradeoff.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files


def lmc_table(report: LmcReport) -> Table:
    t = Table(title="linear mode connectivity")
    for col in ("path", "loss at 0", "loss at 1", "max loss", "barrier", "at alpha"):
        t.add_column(col, justify="right" if col != "path" else "left")
    for b in report.barriers:
        t.add_row(
            b.path,
            f"{b.losses[0]:.4f}",
            f"{b.losses[-1]:.4f}",
            f"{max(b.losses):.4f}",
            f"{b.height:.4f}",
            f"{b.at:g}",
        )
    return t


def write_lmc_outputs(report: LmcReport, out: Path) -> list[Path]:
    """lmc.csv, lmc.json and lmc.png (loss along each path with its endpoints' chord)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lmc.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "alpha", "loss"])
        for b in report.barriers:
            w.writerows([b.path, a, v] for a, v in zip(b.alphas, b.losses, strict=True))
    summary = {
        "inputs": report.refs,
        "barriers": [{"path": b.path, "height": b.height, "at": b.at} for b in report.barriers],
    }
    (out / "lmc.json").write_text(json.dumps(summary, indent=2) + "\n")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for b in report.barriers:
        (line,) = ax.plot(
            b.alphas, b.losses, "o-", ms=3, label=f"{b.path} (barrier {b.height:.3g})"
        )
        ax.plot([0, 1], [b.losses[0], b.losses[-1]], "--", color=line.get_color(), lw=0.8)
    ax.set_xlabel("alpha along the path")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "lmc.png", dpi=120)
    plt.close(fig)
    return [out / "lmc.csv", out / "lmc.json", out / "lmc.png"]


def _output_curve(ax: object, report: ScanReport) -> None:
    """`scan --ensemble`: the output-space ensemble's speciality vs generality on the trade-off
    axes, dashed, sharing the endpoints with the weight-space curve (WiSE-FT's figure)."""
    r = report.result
    pts = [(p.alpha, r.score(p, "speciality"), r.score(p, "generality")) for p in r.outputs]
    pts = [(a, s, g) for a, s, g in pts if s is not None and g is not None]
    if not pts:
        return
    ax.get_lines()[0].set_label("weight-space merge")  # type: ignore[attr-defined]
    ax.plot(  # type: ignore[attr-defined]
        [g for _, _, g in pts],
        [s for _, s, _ in pts],
        "^--",
        color="tab:gray",
        ms=5,
        label=f"output-space ensemble ({r.mix})",
    )
    ax.legend(fontsize=8, loc="best")  # type: ignore[attr-defined]
