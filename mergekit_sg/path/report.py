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


ROLE_COLOURS = {"speciality": "tab:blue", "generality": "tab:orange"}
OTHER_COLOUR = "tab:gray"  # out-of-distribution and reported-only evaluators
MIN_SPAN = 0.05  # a y-axis spans at least this much, so a 0.003 change looks like one


def _panel_title(name: str, role: str, metric: str) -> str:
    """`speciality: accuracy`, `generality.lee: pearson`, `ood.amazon: auc (reported)`."""
    tag = "" if role in name or role in ROLE_COLOURS else f" ({role})"
    if role not in ROLE_COLOURS and not tag:
        tag = " (reported)"
    return f"{name}: {metric}{tag}"


def honest_range(values: list[float], min_span: float = MIN_SPAN) -> tuple[float, float] | None:
    """An axis range at least `min_span` wide centred on the data, or None when the data already
    span that much (autoscaling is then honest): a 0.003 change must not fill the axis."""
    lo, hi = min(values), max(values)
    if hi - lo >= min_span:
        return None
    mid = (hi + lo) / 2
    return mid - min_span / 2, mid + min_span / 2


def _honest_ylim(ax: object, ys: list[float]) -> None:
    """Pad the y-range to at least MIN_SPAN around the data (the title says the change)."""
    span = honest_range(ys)
    if span is not None:
        ax.set_ylim(*span)  # type: ignore[attr-defined]


def _alpha_ticks(ax: object, alphas: list[float]) -> None:
    """At most six alpha ticks, short labels."""
    step = max(1, -(-len(alphas) // 6))
    shown = alphas[::step] if alphas[-1] in alphas[::step] else [*alphas[::step], alphas[-1]]
    ax.set_xticks(shown)  # type: ignore[attr-defined]
    ax.set_xticklabels([f"{a:g}" for a in shown])  # type: ignore[attr-defined]


def _metrics_plot(report: ScanReport, out: Path) -> Path:
    """metrics.png: one panel per evaluator, its primary metric along alpha, coloured by role
    (speciality blue, generality orange, anything else gray), the selection dashed."""
    plt = _plt()
    r = report.result
    alphas = [p.alpha for p in r.points]
    n = len(r.evals)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.5), squeeze=False)
    for ax, e in zip(axes[0], r.evals, strict=True):
        pts = [(p.alpha, p.metrics.get(e.name, {}).get(e.primary)) for p in r.points]
        pts = [(a, y) for a, y in pts if y is not None]
        colour = ROLE_COLOURS.get(e.role, OTHER_COLOUR)
        ax.plot([a for a, _ in pts], [y for _, y in pts], "o-", color=colour)
        title = _panel_title(e.name, e.role, e.primary)
        if pts:
            _honest_ylim(ax, [y for _, y in pts])
            title += f"\nalpha 0 -> 1: {pts[-1][1] - pts[0][1]:+.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("alpha (0 = pretrained, 1 = fine-tuned)", fontsize=8)
        ax.set_ylabel(e.primary)
        _alpha_ticks(ax, alphas)
        if report.selection:
            ax.axvline(report.selection.alpha, color="gray", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=120)
    plt.close(fig)
    return out / "metrics.png"


def _tradeoff_plot(report: ScanReport, out: Path) -> Path | None:
    """tradeoff.png: speciality against generality along alpha; the endpoints as a square
    (alpha 0) and a diamond (alpha 1), the selection as a ring around its point, so no marker
    hides another; alpha labels on the endpoints, the selection and a few points between."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    r = report.result
    pts = [(p.alpha, r.score(p, "speciality"), r.score(p, "generality")) for p in r.points]
    pts = [(a, s, g) for a, s, g in pts if s is not None and g is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.plot([g for _, _, g in pts], [s for _, s, _ in pts], "o-", color="tab:purple", ms=4)
    a0, a1 = min(pts), max(pts)
    sel = report.selection.alpha if report.selection else None
    step = max(1, -(-len(pts) // 6))
    for i, (a, s, g) in enumerate(pts):
        if i % step == 0 or (a, s, g) in (a0, a1) or a == sel:
            ax.annotate(f"α={a:g}", (g, s), textcoords="offset points", xytext=(6, -10), fontsize=8)
    if sel is not None:
        best = min(pts, key=lambda x: abs(x[0] - sel))
        ax.plot(
            best[2], best[1], "o", ms=18, mfc="none", mec="tab:green", mew=2,
            label=f"selected α={best[0]:g}", zorder=1,
        )  # fmt: skip
    ax.plot(a0[2], a0[1], "s", ms=9, color="tab:orange", label="pretrained / zero-shot (α=0)")
    ax.plot(a1[2], a1[1], "D", ms=8, color="tab:blue", label="fine-tuned (α=1)")
    ax.margins(0.1)
    for values, set_lim in (
        ([g for *_, g in pts], ax.set_xlim),
        ([s for _, s, _ in pts], ax.set_ylim),
    ):
        span = honest_range(values, 1.2 * MIN_SPAN)  # both axes: tiny changes look tiny
        if span is not None:
            set_lim(*span)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("generality (mean of the generality evaluators)")
    ax.set_ylabel("speciality")
    ax.set_title("WiSE-FT: speciality vs generality along alpha", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _output_curve(ax, report)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)
    return out / "tradeoff.png"


def _scan_plots(report: ScanReport, out: Path) -> list[Path]:
    files = [_metrics_plot(report, out)]
    trade = _tradeoff_plot(report, out)
    return files + ([trade] if trade is not None else [])


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
        w.writerow(["path", "alpha", report.barriers[0].metric if report.barriers else "loss"])
        for b in report.barriers:
            w.writerows([b.path, a, v] for a, v in zip(b.alphas, b.losses, strict=True))
    summary = {
        "inputs": report.refs,
        "barriers": [
            {
                "path": b.path,
                "evaluator": b.evaluator,
                "metric": b.metric,
                "height": b.height,
                "at": b.at,
                "meaning": b.sentence(),
            }
            for b in report.barriers
        ],
    }
    (out / "lmc.json").write_text(json.dumps(summary, indent=2) + "\n")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for b in report.barriers:
        (line,) = ax.plot(b.alphas, b.losses, "o-", ms=3, label=f"{b.path}: barrier {b.height:.3g}")
        ax.plot([0, 1], [b.losses[0], b.losses[-1]], "--", color=line.get_color(), lw=0.8)
        if b.height > 0:
            chord = b.losses[0] + b.at * (b.losses[-1] - b.losses[0])
            ax.annotate(
                "", (b.at, chord + b.height), (b.at, chord),
                arrowprops={"arrowstyle": "<->", "color": line.get_color()},
            )  # fmt: skip
    ax.plot([], [], "--", color="gray", lw=0.8, label="chord: straight line between endpoints")
    metric = report.barriers[0].metric if report.barriers else "loss"
    ys = [v for b in report.barriers for v in b.losses]
    span = honest_range(ys, max(MIN_SPAN, 0.1 * max(abs(v) for v in ys))) if ys else None
    if span is not None:  # a flat path reads flat: at least 10% of the loss's size in view
        ax.set_ylim(*span)
    ax.set_title(
        f"Linear mode connectivity: {metric} along the path\n"
        "barrier = highest rise of the curve above its chord (arrow); none = connected",
        fontsize=9,
    )
    ax.set_xlabel("alpha along the path")
    ax.set_ylabel(metric)
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
