"""Scans and LMC paths split across workers: the pending alphas of a path are dealt round-robin
into one share per worker slot (alphas[i::n]); each worker loads the model and both endpoints
once, from their path or Hub id, walks its share and returns the metrics. The driver is the one
writer: it records each share as it arrives in the same results.jsonl a local run writes, so
a rerun resumes from the records and the report is the same as a local run's."""

from __future__ import annotations

from pathlib import Path

from mergekit_sg.evals.base import Evaluator
from mergekit_sg.evals.registry import build_evaluator
from mergekit_sg.io.dtypes import user_dtype
from mergekit_sg.jobs import Executor, Job, job_board, resources_for, run_jobs, worker_device
from mergekit_sg.models.adapters import load_model
from mergekit_sg.models.linear_path import LinearPath
from mergekit_sg.path.records import Record, RecordStore
from mergekit_sg.path.walk import EvalInfo, ScanPoint, ScanResult

# metrics of one share: (alpha, evaluator name) -> metric -> value
ShareMetrics = list[tuple[float, str, dict[str, float]]]


def walk_share(
    model: str,
    theta_a: str,
    theta_b: str,
    alphas: list[float],
    eval_specs: list[str],
    device: str,
    compute_dtype: str,
    evaluators: list[Evaluator] | None = None,
    todo: dict[float, list[str]] | None = None,
) -> ShareMetrics:
    """On a worker: load the model and both endpoints once, then evaluate at every alpha of the
    share, in order (theta(alpha) = (1 - alpha) theta_a + alpha theta_b is set from the
    endpoints each time, so a share gives the same numbers as the whole path walked in one
    process). `todo` limits an alpha to the evaluators not yet recorded for it."""
    import torch

    dev = worker_device(device)
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    evs = list(evaluators or []) + [build_evaluator(s) for s in eval_specs]
    lm = load_model(model, theta_a, dev)
    path = LinearPath(
        lm.module,
        theta_a,
        theta_b,
        compute_dtype=user_dtype(compute_dtype),
        rename=lm.rename,
        side_weights=lm.side_weights,
    )
    out: ShareMetrics = []
    for alpha in alphas:
        path.set(alpha)
        for ev in evs:
            if todo is None or ev.name in todo.get(alpha, [ev.name]):
                out.append((alpha, ev.name, dict(ev(lm))))
    return out


def deal(alphas: list[float], shares: int) -> list[list[float]]:
    """Round-robin shares (alphas[i::n]): neighbours go to different workers, so shares of a
    path whose cost varies with alpha stay balanced."""
    n = max(1, min(shares, len(alphas)))
    return [alphas[i::n] for i in range(n) if alphas[i::n]]


def scan_path_jobs(
    executor: Executor,
    *,
    model: str,
    theta_a: str | Path,
    theta_b: str | Path,
    alphas: list[float],
    eval_specs: list[str],
    evaluators: list[Evaluator],
    device: str,
    compute_dtype: str,
    cpus: int,
    store: RecordStore,
    inputs: dict[str, str],
    path_name: str,
    quiet: bool = True,
) -> ScanResult:
    """`scan_path` with the pending alphas walked by workers; the driver records every share
    as it arrives (same records as a local walk), then reads the whole path from the store."""
    given = list(evaluators)
    evs = given + [build_evaluator(s) for s in eval_specs]
    todo: dict[float, list[str]] = {}
    for alpha in alphas:
        missing = [e.name for e in evs if store.done(path_name, alpha, e.name, inputs) is None]
        if missing:
            todo[alpha] = missing
    roles = {e.name: e.role for e in evs}
    res = resources_for(device, cpus, executor.gpus_available())
    shares = deal(list(todo), executor.slots(res))
    jobs = [
        Job(
            f"{path_name} alphas {','.join(f'{a:g}' for a in share)}",
            walk_share,
            {
                "model": model,
                "theta_a": str(theta_a),
                "theta_b": str(theta_b),
                "alphas": share,
                "eval_specs": list(eval_specs),
                "device": device,
                "compute_dtype": compute_dtype,
                "evaluators": given or None,
                "todo": {a: todo[a] for a in share},
            },
            res,
        )
        for share in shares
    ]

    def record(job: Job, metrics: ShareMetrics) -> None:
        for alpha, name, values in metrics:
            store.add(
                [
                    Record(path_name, alpha, name, m, v, roles[name], inputs)
                    for m, v in values.items()
                ]
            )

    if jobs:
        run_jobs(executor, jobs, record, job_board(len(jobs), path_name, quiet))
    return result_from_store(store, alphas, evs, inputs, path_name)


def result_from_store(
    store: RecordStore,
    alphas: list[float],
    evaluators: list[Evaluator],
    inputs: dict[str, str],
    path_name: str,
) -> ScanResult:
    result = ScanResult(path_name, [EvalInfo.of(e) for e in evaluators])
    for alpha in alphas:
        point = ScanPoint(alpha, {})
        for ev in evaluators:
            got = store.done(path_name, alpha, ev.name, inputs)
            assert got is not None, (alpha, ev.name)
            point.metrics[ev.name] = got
        result.points.append(point)
    return result


def side_weights_of(spec: str) -> tuple[str, ...]:
    """The side weight files a model spec may read beside a checkpoint, known without loading
    the model (fingerprints count only those that exist, as `LoadedModel.side_weights` does)."""
    if spec.startswith("open_clip"):
        from mergekit_sg.models.clip_classifier import HEAD_WEIGHTS

        return (HEAD_WEIGHTS,)
    return ()
