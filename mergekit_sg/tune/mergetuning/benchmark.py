"""The prompt protocols of CoOp-style papers as one run: for every dataset and seed, learn the
CoOp prompt (the fine-tuned endpoint), continue it with MERGETUNE, and score the zero-shot CLIP
(the dataset's hand-written template), the initial prompt, CoOp and MERGETUNE on the test set
(base, novel and their harmonic mean with `base_classes`) and on distribution shifts (e.g.
ImageNet -> V2, Sketch, A, R, ObjectNet). Finished runs are reused, so a stopped benchmark
continues where it stopped; results go to OUT/results.jsonl and OUT/summary.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mergekit_sg.executors import make_executor
from mergekit_sg.jobs import (
    Executor,
    Job,
    job_board,
    resources_for,
    run_jobs,
    worker_device,
)
from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions
from mergekit_sg.tune.mergetuning.run import mergetune
from mergekit_sg.tune.prompt import (
    PROMPT_FILE,
    CoopOptions,
    coop,
    load_prompt,
    read_images,
    read_prompt,
    split_accuracy,
)
from mergekit_sg.version import TOOLKIT

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
SCORES = "scores.json"  # one run's rows, written by the driver when the run's job returns
# Set by the benchmark itself for every run (per dataset, seed or benchmark option).
RESERVED = (
    "model",
    "pretrained",
    "data",
    "classnames",
    "val_data",
    "test_data",
    "seed",
    "shots",
    "base_classes",
    "device",
    "save_init",
    "finetuned",
    "zs_template",
    "force",
    "trainable",
)


class ImageSetRef(BaseModel):
    """Images with their class names (an evaluation set)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Image folder, CSV manifest or CoOp split (X.json:test).")
    classnames: str | None = Field(default=None, description="Class-name file.")


class DatasetEntry(BaseModel):
    """One dataset of the protocol."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Short name, also the output folder.")
    data: str = Field(
        description="Training images: folder, CSV manifest or CoOp split (split_zhou_X.json:train)."
    )
    test_data: str | None = Field(default=None, description="Test images.")
    val_data: str | None = Field(default=None, description="Validation images.")
    classnames: str | None = Field(
        default=None, description="Class-name file (label order; a CoOp split file has its own)."
    )
    zs_template: str = Field(
        default="a photo of a {}.", description="The dataset's hand-written CLIP template."
    )
    shifts: dict[str, ImageSetRef] = Field(
        default={}, description="Distribution-shift test sets, scored on all their classes."
    )


def _overrides(model: type[BaseModel], v: dict[str, Any], what: str) -> dict[str, Any]:
    """Check per-command settings against the command's own options model."""
    bad = [k for k in v if k in RESERVED or k not in model.model_fields]
    if bad:
        raise ValueError(
            f"{what}.{bad[0]}: not a setting here (set it on the dataset or the benchmark, "
            "or check the name)"
        )
    required = {"model": "open_clip:x", "pretrained": "x", "data": "x"}
    if "finetuned" in model.model_fields:
        required["finetuned"] = "x"
    try:
        model(**required, **v)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{what}.{loc}: {err['msg']}") from None
    return v


class PromptBenchmarkOptions(BaseModel):
    """CoOp then MERGETUNE on every dataset and seed, scored against zero-shot CLIP."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="open_clip:ARCH.")
    pretrained: str = Field(description="CLIP weights.")
    datasets: list[DatasetEntry] = Field(description="The datasets, each with its template.")
    seeds: list[int] = Field(default=[1, 2, 3], description="Few-shot seeds.")
    shots: int = Field(default=16, ge=1, description="Training images per class.")
    base_classes: bool = Field(
        default=True, description="Base-to-novel: train on base classes, test base and novel."
    )
    coop: dict[str, Any] = Field(default={}, description="Settings of sgmerge coop.")
    mergetune: dict[str, Any] = Field(default={}, description="Settings of sgmerge mergetune.")
    device: str = Field(default="auto", description="cpu, cuda[:N] or auto.")
    force: bool = Field(default=False, description="Retrain runs that are already done.")
    ray: str | None = Field(
        default=None,
        description="Run the dataset x seed jobs on Ray: auto, local or ADDRESS (OUT must be "
        "on a filesystem the workers share).",
    )
    ray_cpus: int = Field(
        default=1, ge=1, description="CPUs (threads) each Ray job uses on a CPU run."
    )

    @field_validator("coop")
    @classmethod
    def _coop(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _overrides(CoopOptions, v, "coop")

    @field_validator("mergetune")
    @classmethod
    def _mergetune(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _overrides(MergetuneOptions, v, "mergetune")


@dataclass
class BenchmarkResult:
    out: Path
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, float]]]  # dataset -> model -> metric -> mean


def run_benchmark(
    out: str | Path,
    options: PromptBenchmarkOptions,
    quiet: bool = True,
    executor: Executor | None = None,
) -> BenchmarkResult:
    """Train and score every dataset x seed, one independent job each (on Ray with `ray`);
    the driver writes each finished run's rows to RUN/scores.json and, at the end, the
    results and summary. A run with scores.json is not redone unless `force`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    o = options
    done: dict[tuple[str, int], list[dict[str, Any]]] = {}
    jobs = []
    executor = executor or make_executor(o.ray)
    res = resources_for(o.device, o.ray_cpus, o.ray is not None and executor.gpus_available())
    for ds in o.datasets:
        for seed in o.seeds:
            rows = None if o.force else _recorded(out / ds.name / f"seed{seed}", ds, seed, o)
            if rows is not None:
                done[(ds.name, seed)] = rows
                continue
            kwargs = {"out": out, "ds": ds, "seed": seed, "o": o, "quiet": quiet}
            jobs.append(Job(f"{ds.name} seed {seed}", benchmark_run, kwargs, res))

    def record(job: Job, rows: list[dict[str, Any]]) -> None:
        ds, seed = job.kwargs["ds"], job.kwargs["seed"]
        f = out / ds.name / f"seed{seed}" / SCORES
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": _run_key(ds, seed, o), "rows": rows}) + "\n")
        tmp.replace(f)
        done[(ds.name, seed)] = rows

    if jobs:
        run_jobs(executor, jobs, record, job_board(len(jobs), "prompt-benchmark", quiet))
    rows = [r for ds in o.datasets for seed in o.seeds for r in done[(ds.name, seed)]]
    with (out / RESULTS).open("w") as f:
        for r in rows:
            f.write(json.dumps({"toolkit": TOOLKIT, **r}) + "\n")
    summary = summarise(rows)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return BenchmarkResult(out, rows, summary)


def _run_key(ds: DatasetEntry, seed: int, o: PromptBenchmarkOptions) -> dict[str, Any]:
    """What a run's scores depend on; recorded scores are reused only when it is unchanged."""
    keep = ("model", "pretrained", "shots", "base_classes", "coop", "mergetune")
    return {"dataset": ds.model_dump(), "seed": seed, **o.model_dump(include=set(keep))}


def _recorded(
    run: Path, ds: DatasetEntry, seed: int, o: PromptBenchmarkOptions
) -> list[dict[str, Any]] | None:
    try:
        saved = json.loads((run / SCORES).read_text())
    except (OSError, ValueError):
        return None
    return saved["rows"] if saved.get("key") == _run_key(ds, seed, o) else None


def benchmark_run(
    out: Path, ds: DatasetEntry, seed: int, o: PromptBenchmarkOptions, quiet: bool = True
) -> list[dict[str, Any]]:
    """One job: CoOp, then MERGETUNE from it, then the scores; prompts already trained under
    OUT/DATASET/seedN are reused unless `force`."""
    run = out / ds.name / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    device = worker_device(o.device) if o.ray else o.device
    common = {
        "model": o.model,
        "pretrained": o.pretrained,
        "data": ds.data,
        "classnames": ds.classnames,
        "val_data": ds.val_data,
        "test_data": ds.test_data,
        "shots": o.shots,
        "base_classes": o.base_classes,
        "seed": seed,
        "device": device,
    }
    if o.force or not (run / "coop" / PROMPT_FILE).exists():
        coop(
            run / "coop",
            quiet=quiet,
            save_init=str(run / "init"),
            force=True,
            **{**common, **o.coop},
        )
    if o.force or not (run / "mergetune" / PROMPT_FILE).exists():
        mergetune(
            run / "mergetune",
            quiet=quiet,
            finetuned=str(run / "coop"),
            zs_template=ds.zs_template,
            force=True,
            **{**common, **o.mergetune},
        )
    return _score(run, ds, seed, o.model_copy(update={"device": device}))


def _score(
    run: Path, ds: DatasetEntry, seed: int, o: PromptBenchmarkOptions
) -> list[dict[str, Any]]:
    """One row per (model, evaluation set): zero-shot template, init prompt, CoOp, MERGETUNE."""
    from mergekit_sg.tune.core import resolve_device

    device = str(resolve_device(o.device))
    sets = {}
    if ds.test_data:
        sets["test"] = (read_images(ds.test_data, ds.classnames), o.base_classes)
    for name, ref in ds.shifts.items():
        sets[name] = (read_images(ref.data, ref.classnames), False)
    cache: dict[Any, Any] = {}
    rows = []
    base = load_prompt(run / "coop", device, o.pretrained)
    for label, folder, template in (
        ("zero-shot", None, ds.zs_template),
        ("init-prompt", run / "init", None),
        ("coop", run / "coop", None),
        ("mergetune", run / "mergetune", None),
    ):
        if folder is not None:
            ctx, _ = read_prompt(folder)
            base.ctx.data.copy_(ctx.to(base.ctx.device))
        for set_name, (images, split) in sets.items():
            acc = split_accuracy(base, images, split, template=template, cache=cache)
            rows.append({"dataset": ds.name, "seed": seed, "model": label, "set": set_name, **acc})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean over seeds of every metric, per dataset, model and evaluation set."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        g = groups.setdefault((r["dataset"], r["model"]), {})
        for k in ("all", "base", "novel", "hm"):
            if k in r:
                g.setdefault(f"{r['set']}.{k}", []).append(r[k])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (ds, model), metrics in groups.items():
        out.setdefault(ds, {})[model] = {k: mean(v) for k, v in metrics.items()}
    return out
