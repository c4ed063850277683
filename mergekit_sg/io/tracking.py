"""Experiment tracking, as the Hugging Face Trainer's `report_to`: the scalars and parameters of
a run also sent to TensorBoard and/or MLflow, beside the JSONL log (which is always written and
stays the record every report is made from).

- `MetricSink` is what a tracker writes to: parameters once, scalars at integer steps, text
  notes, and a close that says whether the run finished. `TensorBoardSink` writes event files
  (`torch.utils.tensorboard`, needs the `tensorboard` package); `MlflowSink` logs one MLflow run
  through `MlflowClient` (needs `mlflow-skinny` or `mlflow`).
- Where files go: TensorBoard under `--logging-dir`, else `OUT/runs/<date_time>`; MLflow to
  `$MLFLOW_TRACKING_URI` when set, else a local file store `OUT/mlruns`; the experiment is
  `--experiment`, else `$MLFLOW_EXPERIMENT_NAME`, else the command's name; the run is named
  after OUT. Both work offline.
- A command whose OUT appears atomically (finetune, coop, mergetune) builds the default
  locations in a staging folder beside OUT and `place()`s them into the output before its
  rename; explicit locations (`--logging-dir`, `$MLFLOW_TRACKING_URI`) are written live.
- The options: every command that tracks declares `report_to`, `logging_dir` and
  `experiment` with the types and fields below (last, so its help lists them last).
- A missing package is found when the options are validated (`--report-to: ...`), before any
  work; so is a name that is neither tensorboard nor mlflow.

The JSONL files are not a sink here: a training log is written atomically with the model and a
scan's records are its resumable state, each with its own format; the sinks are fed from them."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, Field

from mergekit_sg.io.atomic import TMP_TAG

ReportTo = Literal["tensorboard", "mlflow"]
TARGETS: tuple[str, ...] = ("tensorboard", "mlflow")
# target -> (the module that must import, the pip extra of mergekit-sg that brings it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
TB_DIR = "runs"
MLFLOW_DIR = "mlruns"
STATE_FILE = "tracking.json"  # the MLflow run id of a resumable run


def installed(module: str) -> bool:
    """Whether `module` can be imported (a None entry in sys.modules counts as missing)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def parse_report_to(value: object) -> list[str]:
    """`tensorboard,mlflow`, a list of such strings, `all` or `none` -> the targets, in order,
    each once; a missing package or an unknown name is a ValueError of one line."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name in ("", "none"):
                continue
            for n in TARGETS if name == "all" else (name,):
                if n not in TARGETS:
                    raise ValueError(
                        f"{name!r} is not a tracker: tensorboard, mlflow, all or none "
                        "(a comma list)"
                    )
                if n not in names:
                    names.append(n)
    for n in names:
        module, extra = PACKAGES[n]
        if not installed(module):
            raise ValueError(
                f"{n} needs the {module} package, which is not installed: "
                f"pip install 'mergekit-sg[{extra}]'"
            )
    return names


ReportToList = Annotated[list[ReportTo], BeforeValidator(parse_report_to)]


def report_to_field() -> Any:
    return Field(
        default=[],
        description="Also log metrics and options to tensorboard, mlflow or both (a comma "
        "list, or all); the JSONL log is always written.",
    )


def logging_dir_field() -> Any:
    return Field(
        default=None, description="TensorBoard event files here (default OUT/runs/DATE_TIME)."
    )


def experiment_field() -> Any:
    return Field(
        default=None,
        description="MLflow experiment (default $MLFLOW_EXPERIMENT_NAME, else the command).",
    )


class Tracked(Protocol):
    """The options of a command that tracks (each declares these three fields, last, as
    `report_to: ReportToList = report_to_field()` and so on)."""

    report_to: list[str]
    logging_dir: str | None
    experiment: str | None


class MetricSink(Protocol):
    """Where a tracker writes: parameters, scalars at integer steps, text, and the end."""

    def params(self, params: Mapping[str, Any]) -> None: ...

    def metrics(self, values: Mapping[str, float], step: int) -> None: ...

    def text(self, name: str, text: str) -> None: ...

    def close(self, ok: bool) -> None: ...


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and other values kept as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def param_text(v: Any) -> str:
    """A parameter's value as text: JSON for lists and nulls, str otherwise."""
    return v if isinstance(v, str) else json.dumps(v, default=str)


def finite_floats(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries that are real numbers (bools and non-finite values dropped)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class TensorBoardSink:
    """Event files in `logdir`: scalars by tag, the parameters as an HParams summary and as a
    markdown table (text), notes as text. `purge_step`: a resumed run drops what a killed one
    logged from that step on."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir = logdir
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def params(self, params: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        hp = {
            k: v if isinstance(v, (int, float, str, bool)) else param_text(v)
            for k, v in params.items()
        }
        for summary in hparams(hp, {}):
            self.writer.file_writer.add_summary(summary)
        rows = "\n".join(f"| {k} | {param_text(v)} |" for k, v in params.items())
        self.writer.add_text("params", "| parameter | value |\n|---|---|\n" + rows)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def text(self, name: str, text: str) -> None:
        self.writer.add_text(name, text)

    def close(self, ok: bool) -> None:
        self.writer.flush()
        self.writer.close()


_MLFLOW_KEY = re.compile(r"[^0-9A-Za-z_\-. :/]")
MLFLOW_PARAM_CHARS = 6000


def mlflow_key(key: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, _ - . space : /):
    `A->B` becomes `A_to_B`, other characters `_`."""
    return _MLFLOW_KEY.sub("_", key.replace("->", "_to_"))


class MlflowSink:
    """One MLflow run in `experiment` at `uri` (a local path is a file store), named `name`;
    `run_id` continues a run (a resumed fine-tune)."""

    def __init__(self, uri: str, experiment: str, name: str, run_id: str | None = None) -> None:
        if "://" not in uri or uri.startswith("file:"):
            # MLflow 3 keeps the file store behind this opt-in; it is the offline default here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
            run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [
            Param(mlflow_key(k), param_text(v)[:MLFLOW_PARAM_CHARS]) for k, v in params.items()
        ]
        for i in range(0, len(batch), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=batch[i : i + 100])

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def text(self, name: str, text: str) -> None:
        self.client.set_tag(self.run_id, mlflow_key(name), text[:MLFLOW_PARAM_CHARS])

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class Tracker:
    """Every sink of a run: parameters, scalars and notes fan out to each; `place(dest)`
    finishes the run and moves what was staged into `dest` (the output being built).
    As a context manager, an exception closes the run as failed and drops its staging (unless
    `keep_staging`: a resumable fine-tune keeps it with its state); a run that failed before
    logging any scalar (a user error) also removes the folders it `created`, so nothing is
    left behind."""

    def __init__(
        self,
        sinks: list[MetricSink] | None = None,
        staging: Path | None = None,
        keep_staging: bool = False,
        created: list[tuple[Path, bool]] | None = None,
    ) -> None:
        self.sinks = list(sinks or [])
        self.staging = staging
        self.keep_staging = keep_staging
        self.created = list(created or [])
        self.closed = False
        self.logged = False

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def params(self, params: Mapping[str, Any]) -> None:
        for s in self.sinks:
            s.params(params)

    def metrics(self, values: Mapping[str, Any], step: int) -> None:
        clean = finite_floats(values)
        if clean:
            self.logged = True
            for s in self.sinks:
                s.metrics(clean, step)

    def text(self, name: str, text: str) -> None:
        for s in self.sinks:
            s.text(name, text)

    def close(self, ok: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        for s in self.sinks:
            s.close(ok)

    def place(self, dest: Path) -> None:
        """Close the run, then move the staged `runs/` and `mlruns/` into `dest`."""
        self.close(True)
        if self.staging is None:
            return
        for name in (TB_DIR, MLFLOW_DIR):
            if (self.staging / name).exists():
                shutil.move(str(self.staging / name), str(dest / name))
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):  # the run's own error is the one to report
            self.close(kind is None)
        if kind is None or self.keep_staging:
            return
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if not self.logged:
            for path, whole in reversed(self.created):  # the run's folders, then parents
                if whole:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.rmdir()  # OUT or runs/: only when empty (a scan's results stay)


def staging_beside(out: Path) -> Path:
    """Where a run whose OUT appears atomically builds its tracker files: a hidden folder
    beside OUT, named as the atomic writer's temporaries (so a dead run's is cleaned up)."""
    return out.parent / f".{out.name}{TMP_TAG}{os.getpid()}-track"


def open_tracker(
    opts: Tracked,
    out: Path,
    command: str,
    staging: Path | None = None,
    keep_staging: bool = False,
    resume_step: int | None = None,
) -> Tracker:
    """The sinks `opts.report_to` asks for, for a run whose output is `out`: the default
    locations under `staging` when given (moved into the output by `place`), else under
    `out`. `resume_step`: a resumed run (TensorBoard purges from there; MLflow continues the
    run whose id was kept in `staging`)."""
    if not opts.report_to:
        return Tracker()
    home = staging if staging is not None else out
    # what this run creates: (folder, whole) -- whole: only this run's files are in it
    created: list[tuple[Path, bool]] = [] if home.exists() else [(home, False)]
    home.mkdir(parents=True, exist_ok=True)
    sinks: list[MetricSink] = []
    try:
        for target in opts.report_to:
            if target == "tensorboard":
                logdir = Path(opts.logging_dir) if opts.logging_dir else None
                if logdir is None:
                    if not (home / TB_DIR).exists():
                        created.append((home / TB_DIR, False))
                    logdir = _run_dir(home / TB_DIR, resume_step is not None)
                if not logdir.exists():
                    created.append((logdir, True))
                purge = resume_step + 1 if resume_step is not None else None
                sinks.append(TensorBoardSink(logdir, purge))
            else:
                if not os.environ.get("MLFLOW_TRACKING_URI") and not (home / MLFLOW_DIR).exists():
                    created.append((home / MLFLOW_DIR, True))
                sinks.append(_mlflow_sink(opts, home, out, command, staging, resume_step))
    except Exception:
        tracker = Tracker(sinks, staging, keep_staging, created)
        tracker.__exit__(RuntimeError, None, None)
        raise
    return Tracker(sinks, staging, keep_staging, created)


def _run_dir(runs: Path, resuming: bool = False) -> Path:
    """`runs/<date_time>` (one folder per run, as the HF Trainer does), kept unique; a resumed
    run continues its latest folder."""
    if resuming and runs.is_dir() and (kept := sorted(p for p in runs.iterdir() if p.is_dir())):
        return kept[-1]
    base = runs / time.strftime("%Y-%m-%d_%H-%M-%S")
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}_{i}"), i + 1
    return path


def _mlflow_sink(
    opts: Tracked,
    home: Path,
    out: Path,
    command: str,
    staging: Path | None,
    resume_step: int | None,
) -> MlflowSink:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or str((home / MLFLOW_DIR).resolve())
    experiment = opts.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or command
    state = staging / STATE_FILE if staging is not None else None
    run_id = None
    if resume_step is not None and state is not None and state.exists():
        saved = json.loads(state.read_text())
        if saved.get("uri") == uri:
            run_id = saved.get("run_id")
    sink = MlflowSink(uri, experiment, out.name, run_id)
    if state is not None:
        state.write_text(json.dumps({"uri": uri, "run_id": sink.run_id}))
    return sink
