"""`scan`: the in-memory alpha scan, its report files, and with --write-best the selected model,
whose card carries the scan table and the trade-off plot as evidence; its summary lines and its
recipe command."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.commands.recipe import RecipeContext, RecipeResult, recipe_command
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.card import CardExtras, Evidence
from mergekit_sg.io.progress import Progress
from mergekit_sg.merge.merge import merge, parse_grid
from mergekit_sg.models.clip_classifier import interpolate_with_head
from mergekit_sg.path.param_scan import scan_param
from mergekit_sg.path.report import scan_table, write_scan_outputs
from mergekit_sg.path.run import ScanOptions, ScanReport, scan
from mergekit_sg.path.track import scan_tracker, track_scan

__all__ = [
    "RECIPE",
    "ScanOptions",
    "ScanReport",
    "scan_command",
    "scan_config_command",
    "scan_table",
]


def scan_command(
    pretrained: str | Path,
    finetuned: str | Path,
    out: str | Path,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
    evaluators: list | None = None,
    **kwargs: object,
) -> ScanReport:
    """`sgmerge scan`: the in-memory scan, its report files, and with --write-best the selected
    model, whose card carries the scan table and the trade-off plot as evidence."""
    out = Path(out)
    opts = options if options is not None else ScanOptions(**kwargs)  # type: ignore[arg-type]
    if opts.write_best:  # before the scan, not after minutes of it
        check_destination(Path(opts.write_best), opts.force)
    inputs = {"pretrained": str(pretrained), "finetuned": str(finetuned)}
    with scan_tracker(opts, out, "scan", inputs) as tracker:
        report = scan(pretrained, finetuned, out, opts, evaluators, progress)
        write_scan_outputs(report, out)
        track_scan(tracker, report)
    if opts.write_best and report.selection is not None:
        plot = out / "tradeoff.png"
        evidence = Evidence(
            title=f"Why alpha = {report.selection.alpha:g}: the alpha scan",
            rows=report.result.rows(),
            plot=plot if plot.exists() else None,
            note=f"Selected by {report.selection.reason}.",
        )
        report.best = interpolate_with_head(
            pretrained,
            finetuned,
            opts.write_best,
            alpha=report.selection.alpha,
            force=opts.force,
            extras=CardExtras(evidence=(evidence,)),
        )
    return report


def scan_config_command(
    config: str | Path,
    out: str | Path,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
    evaluators: list | None = None,
    **kwargs: object,
) -> ScanReport:
    """`sgmerge scan --config CFG --param NAME=VALUES`: the scan of a merge method's
    coefficient, its report files, and with --write-best the merge at the selected value (its
    card says why)."""
    out = Path(out)
    opts = options if options is not None else ScanOptions(**kwargs)  # type: ignore[arg-type]
    with scan_tracker(opts, out, "scan", {"config": str(config)}) as tracker:
        report = scan_param(config, out, options, evaluators, progress, **kwargs)
        write_scan_outputs(report, out)
        track_scan(tracker, report)
    if opts.write_best and report.selection is not None:
        (name,) = parse_grid(opts.param)
        sel = report.selection
        why = (
            f"Selected {name} = {sel.alpha:g} by {sel.reason} from the scan in `{out}` "
            f"(results.csv there).\n\n" + scan_markdown(report.result.rows())
        )
        report.best = merge(
            config,
            opts.write_best,
            grid={name: [sel.alpha]},
            force=opts.force,
            card_sections=[(f"Why {name} = {sel.alpha:g}", why)],
        )
    return report


def scan_markdown(rows: list[dict[str, float | None]]) -> str:
    """A markdown table of scan rows."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    cell = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    return "\n".join(head + ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows])


def _scan_recipe(
    inputs: dict[str, str], out: Path | None, options: ScanOptions, ctx: RecipeContext
) -> RecipeResult:
    assert out is not None
    rep = scan_command(inputs["pretrained"], inputs["finetuned"], out, options, ctx.progress)
    lines = [f"scan results in {out}"]
    if rep.selection:
        lines.append(f"selected alpha = {rep.selection.alpha:g} ({rep.selection.reason})")
    outputs = [out] + ([rep.best.out] if rep.best else [])
    return RecipeResult(outputs=outputs, lines=lines)


RECIPE = recipe_command(
    "scan",
    ScanOptions,
    _scan_recipe,
    inputs=("pretrained", "finetuned"),
    help="Speciality and generality along alpha, the best alpha, plots; --write-best writes it.",
)
