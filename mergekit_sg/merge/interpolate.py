"""`interpolate`: WiSE-FT from two checkpoints to sharded safetensors, streamed, atomically,
one read of the inputs for any number of alphas."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.io.atomic import atomic_directory, check_destination
from mergekit_sg.io.card import RECIPE_FILE, CardExtras, recipe_text
from mergekit_sg.io.checkpoint import TIED_META, Checkpoint, open_checkpoint
from mergekit_sg.io.progress import NullProgress, Progress
from mergekit_sg.io.safetensors_write import (
    OutSpec,
    ShardLayout,
    StreamingWriter,
    index_json,
    parse_size,
    plan_files,
)
from mergekit_sg.io.sidefiles import check_open_clip_model, copy_side_files, write_open_clip_config
from mergekit_sg.merge.executor import execute
from mergekit_sg.merge.fisher import execute_fisher
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.merge.plan import MergePlan, build_plan
from mergekit_sg.merge.provenance import HashJob, source_record, write_card
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


def _metadata(recipe: dict[str, Any], plan: MergePlan) -> dict[str, str]:
    meta = {"format": "pt", "sgmerge.recipe": json.dumps(recipe, sort_keys=True)}
    if plan.aliases:
        meta[TIED_META] = json.dumps(plan.aliases, sort_keys=True)
    return meta


def interpolate(
    pretrained: str | Path | Checkpoint,
    finetuned: str | Path | Checkpoint,
    out: str | Path,
    options: InterpolateOptions | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    extras: CardExtras | None = None,
    before_commit: Callable[[dict[float, Path]], None] | None = None,
    **kwargs: Any,
) -> InterpolateResult:
    """theta(alpha) = (1 - alpha) * pretrained + alpha * finetuned, written to `out`.

    With several alphas, each model goes to `out/alpha-A`; inputs are still read once.
    `extras` (the recipe file that asked for this, evidence) goes into every output's card.
    `before_commit` gets each alpha's output folder while it is still the temporary one, to add
    files that must be there when the output appears (e.g. a classifier head)."""
    opts = build_options(InterpolateOptions, options, kwargs)
    out = Path(out)
    check_destination(out, opts.force)
    max_bytes = parse_size(opts.max_shard_size)
    if opts.open_clip_model:
        check_open_clip_model(opts.open_clip_model)
    pre, ft = open_checkpoint(pretrained), open_checkpoint(finetuned)
    try:
        plan = build_plan(pre, ft, opts)
        for w in plan.warnings:
            warnings.warn(w, stacklevel=2)
        dirs = output_dirs(out, plan.alphas)
        hash_job = HashJob({"pretrained": pre, "finetuned": ft})
        base = "open_clip_model" if ft.kind == "open_clip" else "model"
        specs = [OutSpec(e.name, e.out_dtype, e.shape) for e in plan.entries]
        with atomic_directory(out, opts.force) as tmp:
            tmp_dirs = [tmp / d.relative_to(out) for d in dirs]
            writers: list[StreamingWriter] = []
            try:
                for d, alpha in zip(tmp_dirs, plan.alphas, strict=True):
                    d.mkdir(parents=True, exist_ok=True)
                    meta = _metadata(_recipe(opts, alpha, pre, ft, None), plan)
                    writers.append(StreamingWriter(d, plan_files(base, specs, max_bytes, meta)))
                if opts.fisher:
                    execute_fisher(
                        plan,
                        pre,
                        ft,
                        opts.fisher,
                        opts.fisher_floor,
                        writers,
                        opts.device,
                        progress or NullProgress(),
                    )
                else:
                    bad = execute(
                        plan,
                        pre,
                        ft,
                        writers,
                        opts.device,
                        progress or NullProgress(),
                        strict=opts.strict,
                    )
                    if bad:
                        warnings.warn(
                            f"{len(bad)} input tensor(s) hold NaN or inf values, merged as they "
                            f"are: {first_few(bad)}; --strict refuses such inputs",
                            stacklevel=2,
                        )
                hashes = hash_job.wait()
                for d, alpha, w in zip(tmp_dirs, plan.alphas, writers, strict=True):
                    recipe = _recipe(opts, alpha, pre, ft, hashes)
                    final = plan_files(base, specs, max_bytes, _metadata(recipe, plan))
                    w.rewrite_headers(final)
                    w.close()
                    _finish_dir(d, base, final, specs, recipe, pre, ft, opts, command, extras)
            finally:
                for w in writers:
                    w.close(sync=False)
            if len(dirs) > 1:
                manifest = {
                    "toolkit": TOOLKIT,
                    "outputs": {f"{a:g}": d.name for a, d in zip(plan.alphas, dirs, strict=True)},
                }
                (tmp / "sgmerge.json").write_text(json.dumps(manifest, indent=2) + "\n")
                if extras is not None and extras.recipe_yaml:
                    (tmp / RECIPE_FILE).write_text(extras.recipe_yaml)
            if before_commit is not None:
                before_commit(dict(zip(plan.alphas, tmp_dirs, strict=True)))
    finally:
        pre.close()
        ft.close()
    return InterpolateResult(out, dict(zip(plan.alphas, dirs, strict=True)), plan)


def _finish_dir(
    d: Path,
    base: str,
    layouts: list[ShardLayout],
    specs: list[OutSpec],
    recipe: dict[str, Any],
    pre: Checkpoint,
    ft: Checkpoint,
    opts: InterpolateOptions,
    command: str | None,
    extras: CardExtras | None,
) -> None:
    """Index, side files, open_clip config, recipe file and model card next to the weights."""
    if len(layouts) > 1:
        (d / f"{base}.safetensors.index.json").write_text(
            index_json(layouts, specs, {"sgmerge.recipe": json.dumps(recipe, sort_keys=True)})
        )
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
        (d / RECIPE_FILE).write_text(recipe_text("interpolate", d, options, inputs))
    if opts.model_card:
        write_card(d, recipe, pre, ft, command, extras)
