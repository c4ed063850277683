"""What the two forgetting benchmarks share: scores of one model, the WiSE-FT comparison, the
Pareto front, the markdown table and the speciality-vs-generality plot.

A method's curve runs from the pretrained model (infinite strength) through its strengths to the
unmitigated fine-tune (strength 0). "vs WiSE-FT" is the method's generality minus the best
generality a WiSE-FT merge reaches at equal or higher speciality (the scan's upper envelope):
positive means the method beats every merge that is at least as special.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergekit_sg.path import EvalInfo, ScanPoint, ScanResult

MARKERS = {"wise-ft": "o", "l1": "s", "l2": "D", "ewc": "^", "kd": "v", "lora": "P"}


def score(info: list[EvalInfo], metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Speciality, generality (means of primaries, as the scan computes them) and each metric."""
    res = ScanResult("", info, [ScanPoint(0.0, metrics)])
    p = res.points[0]
    row: dict[str, Any] = {"speciality": res.score(p, "speciality")}
    row["generality"] = res.score(p, "generality")
    for e in info:
        row[e.name] = metrics[e.name][e.primary]
    return row


def wise_curve(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(speciality, generality) of the scan, sorted by speciality."""
    return sorted((r["speciality"], r["generality"]) for r in rows)


def wise_generality_at(curve: list[tuple[float, float]], spec: float) -> float | None:
    """The WiSE-FT curve's best generality at speciality >= `spec` (its upper envelope), so a
    method point is compared with the merge that is at least as special; None beyond the curve."""
    at_least = [g for s, g in curve if s >= spec - 1e-12]
    if not at_least:
        return None
    return max(at_least)


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points not beaten on both speciality and generality by another, by speciality."""
    front = [
        p
        for p in points
        if not any(
            q["speciality"] >= p["speciality"]
            and q["generality"] >= p["generality"]
            and (q["speciality"], q["generality"]) != (p["speciality"], p["generality"])
            for q in points
        )
    ]
    return sorted(front, key=lambda p: p["speciality"])


def fmt(v: Any, nd: int = 3) -> str:
    """A table cell: '-' for missing, `nd` decimals (negative: signed, -nd decimals)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.{-nd}f}" if nd < 0 else f"{v:.{nd}f}"
    return str(v)


def generality_ci95(accs: list[float], ns: list[int]) -> float:
    """Half-width of the 95% interval of the mean of independent accuracies, binomial per task:
    1.96 * sqrt(sum_i p_i (1 - p_i) / n_i) / k. Two models scored on the same questions differ
    by less noise than this (the questions are shared), so it is a conservative yardstick."""
    var = sum(p * (1 - p) / n for p, n in zip(accs, ns, strict=True))
    return 1.96 * math.sqrt(var) / len(accs)


def compare(wise_rows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Set each mitigation row's `vs_wise` (None beyond the WiSE-FT curve's speciality)."""
    curve = wise_curve(wise_rows)
    for r in rows:
        g = wise_generality_at(curve, r["speciality"])
        r["vs_wise"] = None if g is None else r["generality"] - g


def curves_of(
    wise_rows: list[dict[str, Any]], rows: list[dict[str, Any]], methods: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """WiSE-FT's path; per method with runs: [pretrained, *runs by speciality, fine-tune]."""
    pre_row, ft_row = wise_rows[0], wise_rows[-1]
    curves: dict[str, list[dict[str, Any]]] = {"wise-ft": wise_rows}
    for method in methods:
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["speciality"])
        if pts:
            curves[method] = [pre_row, *pts, ft_row]
    return curves


def table(
    wise_rows: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    cols: list[str],
    labels: dict[str, str],
    digits: int = 3,
    extra: dict[str, Any] | None = None,
) -> str:
    """Markdown table, one line per WiSE-FT alpha and per mitigation run. `extra` maps a column
    title to a function of the row (shown after generality)."""
    extra = extra or {}
    header = ["method", "strength", "speciality", "generality", *extra, "vs WiSE-FT", *cols]
    header.append("train s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in [*wise_rows, *rows]:
        vals = [
            labels[r["method"]],
            f"{r['strength']:g}",
            fmt(r["speciality"], digits),
            fmt(r["generality"]),
            *[f(r) for f in extra.values()],
            fmt(r.get("vs_wise"), -3) if r["method"] != "wise-ft" else "",
            *[fmt(r[c], digits) for c in cols],
            fmt(r["seconds"], 0),
        ]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]], margin: float = 0.005) -> str:
    """How many mitigated runs lie above the WiSE-FT curve by more than `margin`."""
    above = [r for r in rows if r["vs_wise"] is not None and r["vs_wise"] > margin]
    beyond = [r for r in rows if r["vs_wise"] is None]
    names = lambda rs: ", ".join(f"{r['method']}-{r['strength']:g}" for r in rs)  # noqa: E731
    out = (
        f"{len(rows)} mitigated fine-tunes; {len(above)} above the WiSE-FT curve by more than "
        f"{margin:g} generality at equal or higher speciality"
        + (f": {names(above)}" if above else "")
    )
    if beyond:
        out += f"; {len(beyond)} more special than every WiSE-FT merge: {names(beyond)}"
    return out


@dataclass
class PlotText:
    """What the plot says: method names, axes, the two endpoints."""

    labels: dict[str, str]
    xlabel: str
    ylabel: str
    start: str = "pretrained"
    end: str = "fine-tuned, no mitigation"
    legend_loc: str = "best"
    alpha_prefix: bool = False  # WiSE-FT points annotated "a=0.5" instead of "0.5"
    # generality error bar (half-width) drawn at the two endpoints, when known
    endpoint_err: float | None = None
    notes: list[str] = field(default_factory=list)


def plot(path: Path, curves: dict[str, list[dict[str, Any]]], title: str, text: PlotText) -> None:
    """Speciality (x) vs generality (y): WiSE-FT's path as a thick line, each mitigation's
    Pareto front dashed, its runs as markers annotated with their strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    for i, (method, pts) in enumerate(curves.items()):
        color = f"C{i}"
        line = pts if method == "wise-ft" else pareto_front(pts)
        ax.plot(
            [p["speciality"] for p in line],
            [p["generality"] for p in line],
            "-" if method == "wise-ft" else "--",
            color=color,
            lw=2.5 if method == "wise-ft" else 1.3,
            label=text.labels[method],
        )
        own = pts if method == "wise-ft" else pts[1:-1]
        ax.scatter(
            [p["speciality"] for p in own],
            [p["generality"] for p in own],
            color=color,
            marker=MARKERS.get(method, "o"),
            s=40,
            zorder=4,
        )
        for p in own:
            s = p["strength"]
            label = f"a={s:g}" if method == "wise-ft" and text.alpha_prefix else f"{s:g}"
            ax.annotate(
                label,
                (p["speciality"], p["generality"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
                color=color,
            )
    ends = curves["wise-ft"]
    for row, kw in (
        (ends[0], {"facecolors": "none", "edgecolors": "k", "label": text.start}),
        (ends[-1], {"marker": "*", "color": "k", "label": text.end}),
    ):
        ax.scatter([row["speciality"]], [row["generality"]], s=160, zorder=5, **kw)
        if text.endpoint_err:
            ax.errorbar(
                [row["speciality"]],
                [row["generality"]],
                yerr=[text.endpoint_err],
                color="k",
                capsize=4,
                lw=0.8,
                zorder=3,
            )
    ax.set_xlabel(text.xlabel)
    ax.set_ylabel(text.ylabel)
    ax.set_title(title, fontsize=9, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=text.legend_loc)
    # notes go under the axes, beside nothing: inside them they collided with the legend
    for k, note in enumerate(text.notes):
        fig.text(0.99, 0.008 + 0.025 * k, note, ha="right", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0.0, 0.025 * len(text.notes), 1.0, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)
