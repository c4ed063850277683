"""Scans of a merge method's coefficient (`sgmerge scan --config CFG --param NAME=VALUES`): the
live model is put at the merge of CFG with NAME = v for every v, evaluated, and recorded (path
`METHOD:NAME`, each record carrying `param: NAME`).

For a task-vector method (task_arithmetic, ties, dare_*, breadcrumbs*) the merged task vector
delta does not depend on lambda, so theta(lambda) = theta_base + lambda * delta is a linear path:
delta is computed once and each lambda costs what a WiSE-FT scan point costs (one lerp into the
live tensors). Any other coefficient (density, t, a weight) changes the merge itself and is
merged again, in memory, per value."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.io.progress import Progress
from mergekit_sg.merge.memory import LAMBDA, merged_state_dict
from mergekit_sg.merge.merge import as_spec, check_config, check_inputs, parse_grid
from mergekit_sg.merge.mergekit_config import MergeSpec
from mergekit_sg.merge.methods import get_method
from mergekit_sg.merge.methods.task_arithmetic import TaskArithmeticFamily
from mergekit_sg.models.adapters import load_model
from mergekit_sg.models.linear_path import checkpoint_names, lambda_path, load_live
from mergekit_sg.options import build_options
from mergekit_sg.path.run import (
    ScanOptions,
    ScanReport,
    fingerprint,
    make_evaluators,
    open_store,
    resolve_device,
    selected_report,
)
from mergekit_sg.path.walk import scan_path


class RemergePath:
    """A live model at the merge of `spec` with `name` = value, merged again per value (a
    coefficient the merge is not linear in), loaded in place."""

    def __init__(
        self,
        module: torch.nn.Module,
        spec: MergeSpec,
        name: str,
        rename: Callable[[str], str] | None = None,
    ) -> None:
        self.module, self.spec, self.name, self.rename = module, spec, name, rename
        self.names = checkpoint_names(module, rename)
        self.alpha: float | None = None

    def set(self, alpha: float) -> torch.nn.Module:
        state = merged_state_dict(self.spec, {self.name: alpha}, self.names)
        load_live(self.module, state, self.rename)
        self.alpha = alpha
        return self.module


def linear_in(spec: MergeSpec, name: str) -> bool:
    """Whether the merge is linear in `name` (lambda of a task-vector method)."""
    return name == LAMBDA and isinstance(get_method(spec.merge_method), TaskArithmeticFamily)


def scan_param(
    config: str | Path | dict[str, Any] | MergeSpec,
    out: str | Path | None = None,
    options: ScanOptions | None = None,
    evaluators: list[Evaluator] | None = None,
    progress: Progress | None = None,
    **kwargs: Any,
) -> ScanReport:
    """Evaluate the merge of `config` at every value of the one `--param` coefficient and
    select the best value (by the scan's rules); the values are the given ones (no endpoints
    are added: density 0 is not a merge)."""
    opts: ScanOptions = build_options(ScanOptions, options, kwargs)
    grid = parse_grid(opts.param)
    if len(grid) != 1:
        raise SgMergeError("scan --config: give exactly one --param NAME=VALUES (the coefficient)")
    ((name, values),) = grid.items()
    spec = as_spec(config)
    check_config(spec, grid)
    refs, _ = check_inputs(spec, get_method(spec.merge_method))
    evs = make_evaluators(opts.eval, evaluators)
    out = Path(out) if out is not None else None
    model = load_model(opts.model, refs[0], resolve_device(opts.device))
    inputs = {r: fingerprint(r, model.side_weights) for r in dict.fromkeys(refs)}
    cfg = json.dumps(spec.model_dump(), sort_keys=True).encode()
    inputs["config"] = hashlib.sha256(cfg).hexdigest()[:16]
    store = open_store(out, opts.resume)
    if linear_in(spec, name):
        path: Any = lambda_path(model.module, spec, rename=model.rename)
    else:
        path = RemergePath(model.module, spec, name, model.rename)
    label = f"{spec.merge_method}:{name}"
    extra = {"param": name, "method": spec.merge_method}
    result = scan_path(path, model, values, evs, store, inputs, label, progress, extra)
    refs_out = {"config": str(config) if not isinstance(config, (dict, MergeSpec)) else "dict"}
    return selected_report(result, inputs, refs_out, out, opts)


__all__ = ["RemergePath", "linear_in", "scan_param"]
