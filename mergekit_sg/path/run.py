"""`scan` and `lmc`: load the live model once, walk the linear path(s) in memory, record every
metric in OUT/results.jsonl (resumable), select the best alpha, and optionally write it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergekit_sg.device import resolve_device
from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.evals.registry import build_evaluator
from mergekit_sg.executors import make_executor
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.io.dtypes import user_dtype
from mergekit_sg.io.hashing import file_sha256
from mergekit_sg.io.progress import NullProgress, Progress
from mergekit_sg.jobs import Executor
from mergekit_sg.merge.interpolate import InterpolateResult
from mergekit_sg.merge.merge import MergeResult
from mergekit_sg.models.adapters import LoadedModel, load_model
from mergekit_sg.models.linear_path import LinearPath
from mergekit_sg.options import build_options
from mergekit_sg.path.alphas import parse_alphas
from mergekit_sg.path.barriers import PathBarrier, path_barrier
from mergekit_sg.path.distributed import scan_path_jobs, side_weights_of
from mergekit_sg.path.options import LmcOptions, PathOptions, ScanOptions
from mergekit_sg.path.records import RecordStore
from mergekit_sg.path.selection import Selection, select
from mergekit_sg.path.walk import ScanResult, scan_path, with_endpoints

RESULTS = "results.jsonl"


def fingerprint(ref: str | Path, side_weights: tuple[str, ...] = ()) -> str:
    """A short identity of a checkpoint's weights (SHA-256 over its files' SHA-256s), side
    weight files beside it (an open_clip classifier's head) included."""
    with open_checkpoint(ref) as ck:
        hashes = ck.file_hashes()
        side = ck.side_dir
    for name in side_weights:
        if side is not None and (side / name).is_file():
            hashes[name] = file_sha256(side / name)
    h = hashlib.sha256(repr(sorted(hashes.items())).encode()).hexdigest()
    return h[:16]


def make_evaluators(specs: list[str], given: list[Evaluator] | None) -> list[Evaluator]:
    evs = list(given or []) + [build_evaluator(s) for s in specs]
    if not evs:
        raise SgMergeError("give at least one --eval NAME=KIND:ARG")
    names = [e.name for e in evs]
    if len(set(names)) != len(names):
        raise SgMergeError(f"--eval names must be unique: {', '.join(names)}")
    return evs


def open_store(out: Path | None, resume: bool) -> RecordStore:
    """OUT/results.jsonl, continued when resuming, started afresh otherwise."""
    if out is None:
        return RecordStore(None)
    f = out / RESULTS
    if not resume and f.exists():
        f.unlink()
    return RecordStore(f)


def _walk_jobs(
    executor: Executor,
    opts: PathOptions,
    evaluators: list[Evaluator] | None,
    theta_a: str | Path,
    theta_b: str | Path,
    alphas: list[float],
    store: RecordStore,
    inputs: dict[str, str],
    path_name: str,
    progress: Progress | None,
) -> ScanResult:
    """The hook to path/distributed.py: one path's alphas walked by the executor's workers."""
    return scan_path_jobs(
        executor,
        model=opts.model,
        theta_a=theta_a,
        theta_b=theta_b,
        alphas=alphas,
        eval_specs=opts.eval,
        evaluators=list(evaluators or []),
        device=opts.device,
        compute_dtype=opts.compute_dtype,
        cpus=opts.ray_cpus,
        store=store,
        inputs=inputs,
        path_name=path_name,
        quiet=progress is None or isinstance(progress, NullProgress),
    )


@dataclass
class ScanReport:
    result: ScanResult
    selection: Selection | None
    inputs: dict[str, str]
    refs: dict[str, str]
    best: InterpolateResult | MergeResult | None = None
    out: Path | None = None
    note: str | None = None  # why no alpha was selected


def scan(
    pretrained: str | Path,
    finetuned: str | Path,
    out: str | Path | None = None,
    options: ScanOptions | None = None,
    evaluators: list[Evaluator] | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    **kwargs: Any,
) -> ScanReport:
    """Evaluate the live model along theta(alpha) for every alpha (endpoints included) and
    select the best alpha; `--write-best` is carried out by `workflows.scan_command`.

    With `--ray` (or an `executor`) the alphas are split across workers instead."""
    opts: ScanOptions = build_options(ScanOptions, options, kwargs)
    if opts.config or opts.param:
        raise SgMergeError("--config/--param scan a merge config: give no PRETRAINED FINETUNED")
    evs = make_evaluators(opts.eval, evaluators)
    if opts.ensemble is not None:
        _check_ensemble(evs)
    alphas = with_endpoints(parse_alphas(opts.alphas))
    out = Path(out) if out is not None else None
    refs = {"pretrained": str(pretrained), "finetuned": str(finetuned)}
    executor = executor or (make_executor(opts.ray) if opts.ray else None)
    if executor is not None and opts.ensemble is not None:
        raise SgMergeError("--ensemble runs in this process: leave out --ray for it")
    if executor is not None:
        inputs = {k: fingerprint(v, side_weights_of(opts.model)) for k, v in refs.items()}
        store = open_store(out, opts.resume)
        result = _walk_jobs(
            executor, opts, evaluators, pretrained, finetuned, alphas, store, inputs,
            "pretrained->finetuned", progress,
        )  # fmt: skip
    else:
        model = load_model(opts.model, pretrained, resolve_device(opts.device))
        inputs = {k: fingerprint(v, model.side_weights) for k, v in refs.items()}
        store = open_store(out, opts.resume)
        path = LinearPath(
            model.module,
            pretrained,
            finetuned,
            compute_dtype=user_dtype(opts.compute_dtype),
            rename=model.rename,
            side_weights=model.side_weights,
        )
        result = scan_path(
            path, model, alphas, evs, store, inputs, "pretrained->finetuned", progress
        )
        if opts.ensemble is not None:  # the output-space curve beside the weight-space one
            del path, model  # the merged model's memory is freed before the two endpoints load
            _scan_ensemble(result, opts, pretrained, finetuned, alphas, evs, store, inputs)
    return selected_report(result, inputs, refs, out, opts)


def selected_report(
    result: ScanResult,
    inputs: dict[str, str],
    refs: dict[str, str],
    out: Path | None,
    opts: ScanOptions,
) -> ScanReport:
    """The scan's report with its selection; a selection that cannot be made is a note, or an
    error when `--write-best` needs it."""
    report = ScanReport(result, None, inputs, refs, out=out)
    try:
        report.selection = select(result, opts.select, opts.min_speciality, opts.min_generality)
    except SgMergeError as e:
        if opts.write_best:
            raise
        report.note = str(e)
    return report


def _check_ensemble(evs: list[Evaluator]) -> None:
    from mergekit_sg.evals.ensemble import can_ensemble

    for ev in evs:
        if not can_ensemble(ev):
            raise SgMergeError(
                f"--ensemble: --eval {ev.name} does not say how outputs mix (a python "
                "evaluator needs fn.outputs and fn.score)"
            )


def _scan_ensemble(
    result: ScanResult,
    opts: ScanOptions,
    pretrained: str | Path,
    finetuned: str | Path,
    alphas: list[float],
    evs: list[Evaluator],
    store: RecordStore,
    inputs: dict[str, str],
) -> None:
    """Both endpoint models loaded once and held live; their outputs mixed at every alpha."""
    from mergekit_sg.models.ensemble import ModelPair
    from mergekit_sg.path.ensemble import scan_outputs

    assert opts.ensemble is not None
    device = resolve_device(opts.device)
    pair = ModelPair(
        load_model(opts.model, pretrained, device), load_model(opts.model, finetuned, device)
    )
    keyed = {**inputs, "ensemble": opts.ensemble}
    result.outputs = scan_outputs(
        pair, alphas, evs, opts.ensemble, store, keyed, "pretrained->finetuned"
    )
    result.mix = opts.ensemble


@dataclass
class LmcReport:
    paths: list[ScanResult]
    barriers: list[PathBarrier] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)
    out: Path | None = None


def lmc(
    checkpoints: list[str | Path],
    out: str | Path | None = None,
    options: LmcOptions | None = None,
    evaluators: list[Evaluator] | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    **kwargs: Any,
) -> LmcReport:
    """Loss along A->B (two checkpoints), or zero-shot->continued, continued->fine-tuned and
    the direct zero-shot->fine-tuned (three), with each path's barrier."""
    if len(checkpoints) not in (2, 3):
        raise SgMergeError(
            "lmc takes two checkpoints (A B) or three (ZERO_SHOT CONTINUED FINETUNED)"
        )
    opts: LmcOptions = build_options(LmcOptions, options, kwargs)
    evs = make_evaluators(opts.eval, evaluators)
    alphas = with_endpoints(parse_alphas(opts.alphas))
    out = Path(out) if out is not None else None
    labels = ["A", "B"] if len(checkpoints) == 2 else ["zero-shot", "continued", "fine-tuned"]
    refs = dict(zip(labels, map(str, checkpoints), strict=True))
    pairs = [(0, 1)] if len(checkpoints) == 2 else [(0, 1), (1, 2), (0, 2)]
    report = LmcReport([], refs=refs, out=out)
    executor = executor or (make_executor(opts.ray) if opts.ray else None)
    if executor is not None:
        prints = {k: fingerprint(v, side_weights_of(opts.model)) for k, v in refs.items()}
        store = open_store(out, opts.resume)
        for i, j in pairs:
            a, b = labels[i], labels[j]
            res = _walk_jobs(
                executor, opts, evaluators, checkpoints[i], checkpoints[j], alphas, store,
                {a: prints[a], b: prints[b]}, f"{a}->{b}", progress,
            )  # fmt: skip
            report.paths.append(res)
            report.barriers.append(path_barrier(res, evs[0].name, opts.metric))
        return report
    model: LoadedModel = load_model(opts.model, checkpoints[0], resolve_device(opts.device))
    prints = {k: fingerprint(v, model.side_weights) for k, v in refs.items()}
    store = open_store(out, opts.resume)
    prog: Progress = progress or NullProgress()
    prog.start("lmc", len(pairs) * len(alphas) * len(evs), 0)
    try:
        _walk_pairs(
            report, pairs, labels, checkpoints, model, alphas, evs, store, prints, opts, prog
        )
    finally:
        prog.finish()
    return report


def _walk_pairs(
    report: LmcReport,
    pairs: list[tuple[int, int]],
    labels: list[str],
    checkpoints: list[str | Path],
    model: LoadedModel,
    alphas: list[float],
    evs: list[Evaluator],
    store: RecordStore,
    prints: dict[str, str],
    opts: LmcOptions,
    progress: Progress,
) -> None:
    """Each path of an lmc run under one progress bar, with its barrier."""
    for i, j in pairs:
        a, b = labels[i], labels[j]
        path = LinearPath(
            model.module,
            checkpoints[i],
            checkpoints[j],
            compute_dtype=user_dtype(opts.compute_dtype),
            rename=model.rename,
            side_weights=model.side_weights,
        )
        res = scan_path(
            path,
            model,
            alphas,
            evs,
            store,
            {a: prints[a], b: prints[b]},
            f"{a}->{b}",
            progress,
            started=True,
        )
        del path
        report.paths.append(res)
        report.barriers.append(path_barrier(res, evs[0].name, opts.metric))
