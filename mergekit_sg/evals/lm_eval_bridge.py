"""`lm-eval:TASK`: an lm-evaluation-harness task as an evaluator of the live model.

    --eval NAME=lm-eval:TASK[,include=DIR,num_fewshot=K,limit=N,metric=acc,batch_size=B]

The live model (wherever a scan or a training loop has moved its weights) is wrapped, without a
reload, in lm-eval's `HFLM(pretrained=module, tokenizer=tokenizer)` (the tokenizer is always
passed: lm-eval would otherwise reload it by name, which fails offline) and `simple_evaluate`
runs TASK, found in the local `include` folder (task YAML with `dataset_path: json` and local
`data_files`; with `HF_DATASETS_OFFLINE=1` nothing is fetched) or among lm-eval's own tasks.
Every metric lm-eval reports for the task is recorded under its name (`acc`, `acc_norm`,
`word_perplexity`, ...; a filter other than lm-eval's `none` is appended as `acc.FILTER`),
tagged lower-is-better where lm-eval's task says higher is not better. `metric=` picks the
primary (default: the task's first metric). Standard errors are not bootstrapped (the
metric values do not depend on it). The global random states (Python, NumPy, torch) that
`simple_evaluate` seeds are put back afterwards, so a training loop's randomness is untouched."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec
from mergekit_sg.models.adapters import LoadedModel

KIND = "lm-eval"


class LmEvalOptions(BaseModel):
    """The options of `--eval NAME=lm-eval:TASK,...` (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, description="lm-eval task name (or group).")
    include: Path | None = Field(
        default=None, description="Folder of task YAML files (lm_eval --include_path)."
    )
    num_fewshot: int | None = Field(default=None, ge=0, description="Few-shot examples.")
    limit: int | None = Field(default=None, ge=1, description="Score the first N documents.")
    metric: str | None = Field(default=None, description="Primary metric (default: the first).")
    batch_size: int = Field(default=8, ge=1, description="Requests per forward pass.")
    max_length: int | None = Field(
        default=None, ge=2, description="Context length (default: the model's, as lm-eval)."
    )


def _need_lm_eval() -> None:
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401
    except ImportError as e:
        raise SgMergeError(
            f"--eval lm-eval:... needs lm-evaluation-harness ({e.name} is missing): "
            "pip install 'mergekit-sg[lm-eval]'"
        ) from None


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """lm-eval logs every step at INFO/WARNING; keep errors only while it runs."""
    names = ("lm-eval", "lm_eval", "lm_eval.models.huggingface", "lm_eval.evaluator")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Python, NumPy and torch (CPU) global random states as they were before."""
    import numpy as np

    py, nps, th = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(nps)
        torch.random.set_rng_state(th)


def task_manager(include: Path | None) -> Any:
    """lm-eval's TaskManager over `include` only (fast: the built-in index is skipped), or
    over its built-in tasks when no folder is given."""
    from lm_eval.tasks import TaskManager

    with quiet_lm_eval():
        if include is None:
            return TaskManager()
        return TaskManager(include_path=str(include), include_defaults=False)


def task_metrics(tm: Any, name: str) -> dict[str, bool]:
    """metric -> higher is better, for every subtask `name` expands to, in the task's order."""
    from lm_eval.tasks import get_task_dict

    with quiet_lm_eval():
        tasks = get_task_dict([name], tm)
    out: dict[str, bool] = {}

    def walk(d: Any) -> None:
        for v in d.values():
            if isinstance(v, dict):
                walk(v)
            elif hasattr(v, "higher_is_better"):
                for m, hib in v.higher_is_better().items():
                    out.setdefault(m, bool(hib))

    walk(tasks)
    return out


@dataclass
class LmEvalEvaluator(BaseEvaluator):
    options: LmEvalOptions | None = None
    higher: dict[str, bool] = field(default_factory=dict)
    _tm: Any = field(default=None, repr=False)

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        o = self.options
        assert o is not None
        if model.tokenizer is None:
            raise SgMergeError(f"--eval {self.name}: the model has no tokenizer for lm-eval")
        module = model.module
        was_training = module.training
        module.eval()
        try:
            with quiet_lm_eval(), kept_random_state():
                kw: dict[str, Any] = {"max_length": o.max_length} if o.max_length else {}
                lm = HFLM(
                    pretrained=module, tokenizer=model.tokenizer, batch_size=o.batch_size, **kw
                )
                res = simple_evaluate(
                    model=lm,
                    tasks=[o.task],
                    num_fewshot=o.num_fewshot,
                    limit=o.limit,
                    task_manager=self._tm,
                    bootstrap_iters=0,
                    log_samples=False,
                    verbosity="ERROR",
                )
        finally:
            module.train(was_training)
        return flatten_results(res, o.task)


def flatten_results(res: dict[str, Any], task: str) -> dict[str, float]:
    """lm-eval's results of `task` ({"acc,none": 0.5, "acc_stderr,none": "N/A", ...}) as
    {"acc": 0.5}; a task group's subtasks come as "SUBTASK/acc" beside the group's own."""
    out: dict[str, float] = {}
    results = res.get("results", {})
    for name, metrics in results.items():
        prefix = "" if name == task else f"{name}/"
        for key, value in metrics.items():
            metric, comma, flt = key.partition(",")
            if not comma or "stderr" in metric or not isinstance(value, (int, float)):
                continue
            label = metric if flt in ("", "none") else f"{metric}.{flt}"
            out[prefix + label] = float(value)
    return out


def build(spec: EvalSpec) -> LmEvalEvaluator:
    """The evaluator of one `--eval NAME=lm-eval:TASK,...`: options checked, the task found
    and its metrics read now, so a missing folder or task is an error before any work."""
    try:
        opts = LmEvalOptions(task=spec.arg, **spec.options)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise SgMergeError(f"--eval {spec.name}: option {where}: {err['msg']}") from None
    if opts.include is not None and not opts.include.is_dir():
        raise SgMergeError(f"--eval {spec.name}: include={opts.include} is not a folder")
    _need_lm_eval()
    tm = task_manager(opts.include)
    if opts.task not in tm.all_tasks:
        where = f"in {opts.include}" if opts.include else "among lm-eval's tasks"
        raise SgMergeError(f"--eval {spec.name}: no lm-eval task {opts.task!r} {where}")
    higher = task_metrics(tm, opts.task)
    if not higher:
        raise SgMergeError(f"--eval {spec.name}: lm-eval task {opts.task!r} has no metrics")
    primary = opts.metric or next(iter(higher))
    if primary not in higher:
        raise SgMergeError(
            f"--eval {spec.name}: metric={primary!r} is not a metric of {opts.task} "
            f"({', '.join(higher)})"
        )
    lower = frozenset(m for m, hib in higher.items() if not hib)
    return LmEvalEvaluator(
        spec.name, spec.role, primary, lower, options=opts, higher=higher, _tm=tm
    )
