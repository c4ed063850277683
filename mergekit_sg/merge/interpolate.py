"""`interpolate`: WiSE-FT from two checkpoints to sharded safetensors, streamed, atomically,
one read of the inputs for any number of alphas. The checkpoints are opened with their side
weight files (an open_clip classifier's head), merged by the same plan in the same pass."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.card import RECIPE_FILE, CardExtras, recipe_text
from mergekit_sg.io.checkpoint import Checkpoint, add_side_weights, open_checkpoint
from mergekit_sg.io.progress import Progress
from mergekit_sg.io.safetensors_write import parse_size
from mergekit_sg.io.sidefiles import check_open_clip_model, copy_side_files, write_open_clip_config
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.merge.output import write_plan
from mergekit_sg.merge.plan import MergePlan, build_plan
from mergekit_sg.merge.provenance import source_record, write_card
from mergekit_sg.options import build_options
from mergekit_sg.version import TOOLKIT


@dataclass
class InterpolateResult:
    """Where each alpha's model was written."""

    out: Path
    outputs: dict[float, Path]
    plan: MergePlan


def output_dirs(root: Path, alphas: tuple[float, ...]) -> list[Path]:
    if len(alphas) == 1:
        return [root]
    names = [f"alpha-{a:g}" for a in alphas]
    if len(set(names)) != len(names):
        raise SgMergeError(f"--alpha lists the same value twice: {', '.join(names)}")
    return [root / n for n in names]


def _recipe(
    opts: InterpolateOptions,
    alpha: float,
    pre: Checkpoint,
    ft: Checkpoint,
    hashes: dict[str, dict[str, str]] | None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {"method": "fisher" if opts.fisher else "linear", "alpha": alpha}
    if opts.fisher:
        rec.update(fisher=list(opts.fisher), fisher_floor=opts.fisher_floor)
    for key in ("alpha_for", "exclude", "only"):
        if getattr(opts, key):
            rec[key] = list(getattr(opts, key))
    rec.update(
        excluded_from=opts.excluded_from,
        compute_dtype=opts.compute_dtype,
        dtype=opts.dtype,
        sources={
            "pretrained": source_record(pre, hashes and hashes["pretrained"]),
            "finetuned": source_record(ft, hashes and hashes["finetuned"]),
        },
        toolkit=TOOLKIT,
    )
    return rec


def _open(ref: str | Path | Checkpoint) -> Checkpoint:
    if isinstance(ref, Checkpoint):
        return add_side_weights(ref)
    return open_checkpoint(ref, side_weights=True)


def interpolate(
    pretrained: str | Path | Checkpoint,
    finetuned: str | Path | Checkpoint,
    out: str | Path,
    options: InterpolateOptions | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    extras: CardExtras | None = None,
    **kwargs: Any,
) -> InterpolateResult:
    """theta(alpha) = (1 - alpha) * pretrained + alpha * finetuned, written to `out`.

    With several alphas, each model goes to `out/alpha-A`; inputs are still read once. With
    `fisher=[F0, F1]` the Fisher-weighted interpolation. Side weight files both checkpoints
    have (classifier_head.safetensors) are interpolated by the same rules in the same pass and
    written beside the weights with the fine-tuned's classifier_head.json; a head on one side
    only is left out with a warning. `extras` (the recipe file that asked for this, evidence)
    goes into every output's card."""
    opts = build_options(InterpolateOptions, options, kwargs)
    out = Path(out)
    check_destination(out, opts.force)
    max_bytes = parse_size(opts.max_shard_size)
    if opts.open_clip_model:
        check_open_clip_model(opts.open_clip_model)
    with contextlib.ExitStack() as stack:
        pre = _open(pretrained)
        stack.callback(pre.close)
        ft = _open(finetuned)
        stack.callback(ft.close)
        fisher = [open_checkpoint(f) for f in opts.fisher]
        for f in fisher:
            stack.callback(f.close)
        plan = build_plan(pre, ft, opts, fisher)
        for w in plan.warnings:
            warnings.warn(w, stacklevel=2)
        dirs = output_dirs(out, plan.alphas)
        base = "open_clip_model" if ft.kind == "open_clip" else "model"

        def recipe(k: int, hashes: dict[str, dict[str, str]] | None) -> dict[str, Any]:
            return _recipe(opts, plan.alphas[k], pre, ft, hashes)

        def finish(k: int, d: Path, rec: dict[str, Any]) -> None:
            _finish_dir(d, rec, pre, ft, opts, command, extras, final=dirs[k])

        write_plan(
            plan,
            out,
            dirs,
            [f"{a:g}" for a in plan.alphas],
            {"pretrained": pre, "finetuned": ft},
            recipe,
            finish,
            base=base,
            max_bytes=max_bytes,
            force=opts.force,
            device=opts.device,
            strict=opts.strict,
            progress=progress,
            side_dir=ft.side_dir,
            recipe_yaml=extras.recipe_yaml if extras is not None else None,
        )
    return InterpolateResult(out, dict(zip(plan.alphas, dirs, strict=True)), plan)


def _finish_dir(
    d: Path,
    recipe: dict[str, Any],
    pre: Checkpoint,
    ft: Checkpoint,
    opts: InterpolateOptions,
    command: str | None,
    extras: CardExtras | None,
    final: Path | None = None,
) -> None:
    """Side files, open_clip config, recipe file and model card next to the weights (`d`, the
    temporary folder; `final`, where it will be renamed to, is what the recipe names)."""
    if opts.side_files:
        from mergekit_sg.io.dtypes import user_dtype

        copy_side_files(ft.side_dir, d, user_dtype(opts.dtype) if opts.dtype else None)
    if opts.open_clip_model and not (d / "open_clip_config.json").exists():
        write_open_clip_config(d, opts.open_clip_model)
    if extras is not None and extras.recipe_yaml:
        (d / RECIPE_FILE).write_text(extras.recipe_yaml)
    elif opts.model_card:  # a plain CLI or Python merge: the recipe that redoes this output
        options = {**opts.model_dump(exclude_defaults=True), "alpha": [recipe["alpha"]]}
        inputs = {"pretrained": pre.ref, "finetuned": ft.ref}
        where = (final or d).absolute()
        (d / RECIPE_FILE).write_text(recipe_text("interpolate", where, options, inputs))
    if opts.model_card:
        write_card(d, recipe, pre, ft, command, extras)
