"""The prompt protocols of CoOp-style papers as one run: for every dataset and seed, learn the
CoOp prompt (and, with `methods: [coop, kgcoop]`, the KgCoOp prompt: CoOp plus
kg_weight * (1 - mean_c cos(T(w)_c, T_zs_c))), continue each with MERGETUNE, and score the
zero-shot CLIP (the dataset's hand-written template), the initial prompt, CoOp, KgCoOp and each
+ MERGETUNE on the test set (base, novel and their harmonic mean with `base_classes`) and on
other image sets (`shifts`: ImageNet -> V2, Sketch, A, R for domain generalisation, or the ten
other datasets for cross-dataset transfer, each with its own class names and template). With
`zs_ensemble`, every learned prompt is also scored ensembled with the zero-shot classifier
(softmax probabilities mixed, weight `ensemble_alpha` on the prompt). Finished runs are reused,
so a stopped benchmark continues where it stopped; results go to OUT/results.jsonl,
OUT/summary.json and the paper-style table OUT/table.md (OUT/table.csv)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Literal

import torch
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
from mergekit_sg.models.ensemble import mix_scores
from mergekit_sg.tune.mergetuning.mergetune_options import MergetuneOptions
from mergekit_sg.tune.mergetuning.run import mergetune
from mergekit_sg.tune.prompt import (
    PROMPT_FILE,
    CoopOptions,
    Images,
    class_metrics,
    coop,
    harmonic_mean,
    image_features,
    load_prompt,
    prompt_logits,
    read_images,
    read_prompt,
    split_classes,
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
    "kg_weight",
)
# method -> (prompt folder, its MERGETUNE folder, row labels); "coop"/"mergetune" as before
METHODS = {
    "coop": ("coop", "mergetune", "coop", "mergetune"),
    "kgcoop": ("kgcoop", "kgcoop-mergetune", "kgcoop", "kgcoop+mergetune"),
}


class ImageSetRef(BaseModel):
    """Images with their class names (an evaluation set)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Image folder, CSV manifest or CoOp split (X.json:test).")
    classnames: str | None = Field(default=None, description="Class-name file.")
    zs_template: str | None = Field(
        default=None,
        description="This set's hand-written template for the zero-shot rows (default: the "
        "training dataset's); cross-dataset transfer gives each target its own.",
    )


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
    methods: list[Literal["coop", "kgcoop"]] = Field(
        default=["coop"], description="Prompt learners, each continued with MERGETUNE."
    )
    kg_weight: float = Field(default=8.0, gt=0, description="KgCoOp's weight W (8.0 in KgCoOp).")
    zs_ensemble: bool = Field(
        default=False, description="Also score each learned prompt ensembled with zero-shot."
    )
    ensemble_alpha: float = Field(
        default=0.5, gt=0, lt=1, description="Weight of the prompt in the zero-shot ensemble."
    )
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
    write_table(out, summary)
    return BenchmarkResult(out, rows, summary)


def _run_key(ds: DatasetEntry, seed: int, o: PromptBenchmarkOptions) -> dict[str, Any]:
    """What a run's scores depend on; recorded scores are reused only when it is unchanged."""
    keep = (
        "model",
        "pretrained",
        "shots",
        "base_classes",
        "coop",
        "mergetune",
        "methods",
        "kg_weight",
        "zs_ensemble",
        "ensemble_alpha",
    )
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
    """One job: each method (CoOp, KgCoOp), then MERGETUNE from it, then the scores; prompts
    already trained under OUT/DATASET/seedN are reused unless `force`."""
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
    for method in o.methods:
        _train(run, method, ds, common, o, quiet)
    return _score(run, ds, seed, o.model_copy(update={"device": device}))


def _train(
    run: Path,
    method: str,
    ds: DatasetEntry,
    common: dict[str, Any],
    o: PromptBenchmarkOptions,
    quiet: bool,
) -> None:
    """The method's prompt (CoOp, or KgCoOp with T_zs from the dataset's template) and its
    MERGETUNE continuation, unless already on disk."""
    folder, continued, _, _ = METHODS[method]
    if o.force or not (run / folder / PROMPT_FILE).exists():
        extra: dict[str, Any] = {}
        if method == "coop" or not (run / "init" / PROMPT_FILE).exists():
            extra["save_init"] = str(run / "init")  # the initial prompt: the same for both
        if method == "kgcoop":
            extra.update(kg_weight=o.kg_weight, zs_template=ds.zs_template)
        coop(run / folder, quiet=quiet, force=True, **extra, **{**common, **o.coop})
    if o.force or not (run / continued / PROMPT_FILE).exists():
        mergetune(
            run / continued,
            quiet=quiet,
            finetuned=str(run / folder),
            zs_template=ds.zs_template,
            force=True,
            **{**common, **o.mergetune},
        )


def _score(
    run: Path, ds: DatasetEntry, seed: int, o: PromptBenchmarkOptions
) -> list[dict[str, Any]]:
    """One row per (model, evaluation set): zero-shot template, init prompt, each method's
    prompt and its MERGETUNE continuation, and (zs_ensemble) each learned prompt ensembled with
    the zero-shot classifier: log((1 - a) softmax(l_zs) + a softmax(l_prompt))."""
    from mergekit_sg.tune.core import resolve_device

    device = str(resolve_device(o.device))
    sets: dict[str, tuple[Images, bool, str]] = {}
    if ds.test_data:
        sets["test"] = (read_images(ds.test_data, ds.classnames), o.base_classes, ds.zs_template)
    for name, ref in ds.shifts.items():
        sets[name] = (
            read_images(ref.data, ref.classnames),
            False,
            ref.zs_template or ds.zs_template,
        )
    cache: dict[Any, Any] = {}
    models: list[tuple[str, Path | None]] = [("zero-shot", None), ("init-prompt", run / "init")]
    for method in o.methods:
        folder, continued, label, cont_label = METHODS[method]
        models += [(label, run / folder), (cont_label, run / continued)]
    learned = [m for m, _ in models[2:]]
    first = next(f for _, f in models if f is not None and (f / PROMPT_FILE).exists())
    base = load_prompt(first, device, o.pretrained)
    logits: dict[str, dict[str, dict[str, tuple[torch.Tensor, list[int]]]]] = {}
    for label, folder in models:
        if folder is not None:
            ctx, _ = read_prompt(folder)
            base.ctx.data.copy_(ctx.to(base.ctx.device))
        for set_name, (images, split, template) in sets.items():
            zs = template if folder is None else None
            logits.setdefault(label, {})[set_name] = _split_logits(base, images, split, zs, cache)
    rows = []
    ensembles = [(f"{m} + zero-shot", m) for m in learned] if o.zs_ensemble else []
    for label in [m for m, _ in models] + [e for e, _ in ensembles]:
        source = dict(ensembles).get(label)
        for set_name, (_, split, _) in sets.items():
            acc = {}
            for part, (lg, y) in logits[source or label][set_name].items():
                if source is not None:
                    zs_logits = logits["zero-shot"][set_name][part][0]
                    lg = mix_scores(zs_logits, lg, o.ensemble_alpha, "probs")
                acc[part] = class_metrics(lg, y)["accuracy"]
            if split:
                acc["hm"] = harmonic_mean(acc["base"], acc["novel"])
            rows.append({"dataset": ds.name, "seed": seed, "model": label, "set": set_name, **acc})
    return rows


def _split_logits(
    pm: Any, images: Images, base_novel: bool, template: str | None, cache: dict[Any, Any]
) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """Logits and labels on all classes, or on base and novel each among its own classes (as
    CoOp scores them); image features computed once per (set, split)."""
    out = {}
    for which in ("all", "base", "novel") if base_novel else ("all",):
        part = split_classes(images, which)
        key = (images.source, which)
        if key not in cache:
            cache[key] = image_features(pm, part)
        with torch.no_grad():
            lg = prompt_logits(pm, part, cache[key], template=template).float().cpu()
        out[which] = (lg, list(part.labels))
    return out


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


TABLE_MD = "table.md"
TABLE_CSV = "table.csv"


def paper_table(
    summary: dict[str, dict[str, dict[str, float]]],
) -> tuple[list[str], list[list[str | float | None]]]:
    """The papers' table: one row per model; per dataset base / novel / HM (base-to-novel) or
    its test accuracy, every other set's accuracy (targets, shifts), then the averages: base,
    novel and the HM of those two averages (as CoCoOp and KgCoOp report it), and the mean over
    the target sets. Values are accuracies in percent (None where a model has none)."""
    cols: list[tuple[str, str, str]] = []  # (header, dataset, metric key)
    for ds, models in summary.items():
        keys = list(dict.fromkeys(k for m in models.values() for k in m))
        if "test.hm" in keys:
            cols += [(f"{ds} base", ds, "test.base"), (f"{ds} novel", ds, "test.novel")]
            cols.append((f"{ds} HM", ds, "test.hm"))
        elif "test.all" in keys:
            cols.append((ds, ds, "test.all"))
        cols += [(k.removesuffix(".all"), ds, k) for k in keys if not k.startswith("test.")]
    names = list(dict.fromkeys(m for models in summary.values() for m in models))
    b2n = any(key == "test.hm" for _, _, key in cols)
    targets = [c for c in cols if not c[2].startswith("test.")]
    header = ["model", *(c[0] for c in cols)]
    header += ["average base", "average novel", "average HM"] if b2n else []
    header += ["average (targets)"] if targets else []
    rows: list[list[str | float | None]] = []
    for name in names:

        def val(ds: str, key: str, name: str = name) -> float | None:
            v = summary[ds].get(name, {}).get(key)
            return None if v is None else 100 * v

        row: list[str | float | None] = [name, *(val(ds, key) for _, ds, key in cols)]
        if b2n:
            base = _avg([val(ds, "test.base") for ds in summary if "test.hm" in _keys(summary, ds)])
            novel = _avg(
                [val(ds, "test.novel") for ds in summary if "test.hm" in _keys(summary, ds)]
            )
            hm = 2 * base * novel / (base + novel) if base and novel else None
            row += [base, novel, hm]
        if targets:
            row.append(_avg([val(ds, key) for _, ds, key in targets]))
        rows.append(row)
    return header, rows


def _keys(summary: dict[str, dict[str, dict[str, float]]], ds: str) -> set[str]:
    return {k for m in summary[ds].values() for k in m}


def _avg(values: list[float | None]) -> float | None:
    return mean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def write_table(out: Path, summary: dict[str, dict[str, dict[str, float]]]) -> list[Path]:
    """OUT/table.md (markdown, accuracies in %) and OUT/table.csv."""
    import csv

    header, rows = paper_table(summary)

    def cell(v: str | float | None) -> str:
        return "-" if v is None else v if isinstance(v, str) else f"{v:.2f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    (out / TABLE_MD).write_text("\n".join(lines) + "\n")
    with (out / TABLE_CSV).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([[("" if v is None else v) for v in row] for row in rows])
    return [out / TABLE_MD, out / TABLE_CSV]
