"""`sgmerge fisher`: estimate the diagonal Fisher of a model on data (see `diagonal`) and store it
with the checkpoint's tensor names (see `store`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.evals.common import progress
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.tune.core.device import resolve_device, seed_all
from mergekit_sg.tune.fisher.diagonal import diagonal_fisher
from mergekit_sg.tune.fisher.fisher_options import FisherOptions
from mergekit_sg.tune.fisher.store import save_fisher
from mergekit_sg.tune.tasks.build import build_task
from mergekit_sg.tune.tasks.data import subset
from mergekit_sg.tune.tasks.task_options import make
from mergekit_sg.version import TOOLKIT


@dataclass
class FisherResult:
    out: Path
    tensors: int
    samples: int
    method: str
    seconds: float
    mode: str = "empirical"

    def summary(self) -> str:
        """The one line the CLI and recipes print when it is done."""
        return (
            f"Fisher of {self.tensors} tensors over {self.samples} examples ({self.mode}, "
            f"per-sample {self.method}) -> {self.out} in {self.seconds:.1f} s"
        )


def compute_fisher(
    out: str | Path,
    options: FisherOptions | None = None,
    quiet: bool = True,
    recipe_yaml: str | None = None,
    **kwargs: Any,
) -> FisherResult:
    """Estimate the Fisher of `pretrained` under `model` on `data` and write it to `out`
    (with `recipe_yaml`, the recipe that ran it, in the file's metadata)."""
    opts: FisherOptions = make(FisherOptions, options, kwargs)
    out = Path(out)
    check_destination(out, opts.force)
    t0 = time.perf_counter()
    seed_all(opts.seed)
    device = resolve_device(opts.device)
    task = build_task(opts, device)
    examples = subset(task.features, opts.samples, opts.seed)

    def collate(feats: list[Any]) -> dict[str, torch.Tensor]:
        return task.collate(feats, device)

    def forward(module: torch.nn.Module, batch: dict[str, torch.Tensor]):
        o = task.forward(module, batch)
        return o.logits, o.targets

    with progress("fisher", 0 if quiet else len(examples)) as advance:
        values, method = diagonal_fisher(
            task.module,
            forward,
            examples,
            collate,
            opts.mode,
            opts.per_sample,
            opts.batch_size,
            opts.seed,
            advance,
        )
    named = {task.checkpoint_name(n): v.contiguous() for n, v in values.items()}
    meta = {
        "mode": opts.mode,
        "samples": len(examples),
        "per_sample": method,
        "model": opts.model,
        "pretrained": opts.pretrained,
        "data": opts.data,
        "seed": opts.seed,
        "toolkit": TOOLKIT,
    }
    if recipe_yaml:
        meta["recipe"] = recipe_yaml
    save_fisher(out, named, meta, opts.force)
    seconds = time.perf_counter() - t0
    return FisherResult(out, len(named), len(examples), method, seconds, opts.mode)
