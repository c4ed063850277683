"""Writing a plan's outputs: one folder per output (atomically, all or none), sharded
safetensors laid out before any data exists, side weight files (a classifier head) in their
own file, the recipe in every header, hashes of the sources computed while the merge runs."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mergekit_sg.errors import first_few
from mergekit_sg.io.atomic import atomic_directory
from mergekit_sg.io.checkpoint import SIDE_WEIGHT_FILES, TIED_META, Checkpoint
from mergekit_sg.io.progress import NullProgress, Progress
from mergekit_sg.io.safetensors_write import (
    OutSpec,
    ShardLayout,
    StreamingWriter,
    index_json,
    layout_shard,
    plan_files,
)
from mergekit_sg.merge.executor import execute
from mergekit_sg.merge.plan import MergePlan
from mergekit_sg.merge.provenance import HashJob
from mergekit_sg.version import TOOLKIT

# recipe(k, hashes or None) -> the recipe of output k
RecipeFn = Callable[[int, dict[str, dict[str, str]] | None], dict[str, Any]]
# finish(k, folder, recipe) -> side files, card ... next to output k's weights
FinishFn = Callable[[int, Path, dict[str, Any]], None]


def metadata(recipe: dict[str, Any], plan: MergePlan) -> dict[str, str]:
    meta = {"format": "pt", "sgmerge.recipe": json.dumps(recipe, sort_keys=True)}
    if plan.aliases:
        meta[TIED_META] = json.dumps(plan.aliases, sort_keys=True)
    return meta


def layouts(
    plan: MergePlan, base: str, max_bytes: int, meta: dict[str, str]
) -> tuple[list[ShardLayout], list[ShardLayout], list[OutSpec]]:
    """(main shard layouts, side weight file layouts, main specs)."""
    main = [OutSpec(e.name, e.out_dtype, e.shape) for e in plan.entries if not e.group]
    groups: dict[str, list[OutSpec]] = {}
    for e in plan.entries:
        if e.group:
            groups.setdefault(e.group, []).append(OutSpec(e.name, e.out_dtype, e.shape))
    side = [layout_shard(g, specs, meta) for g, specs in groups.items()]
    return plan_files(base, main, max_bytes, meta), side, main


def write_plan(
    plan: MergePlan,
    out: Path,
    dirs: list[Path],
    labels: list[str],
    roles: dict[str, Checkpoint],
    recipe: RecipeFn,
    finish: FinishFn,
    *,
    base: str,
    max_bytes: int,
    force: bool,
    device: str,
    progress: Progress | None,
    side_dir: Path | None,
    recipe_yaml: str | None = None,
    strict: bool = False,
) -> None:
    """Run the plan once and write output k to dirs[k] (all under `out`, atomically).

    Input tensors holding NaN or inf are named in a warning (merged as they are), or with
    `strict` refused before anything is committed."""
    hash_job = HashJob(roles)
    with atomic_directory(out, force) as tmp:
        tmp_dirs = [tmp / d.relative_to(out) for d in dirs]
        writers: list[StreamingWriter] = []
        try:
            for k, d in enumerate(tmp_dirs):
                d.mkdir(parents=True, exist_ok=True)
                main, side, _ = layouts(plan, base, max_bytes, metadata(recipe(k, None), plan))
                writers.append(StreamingWriter(d, main + side))
            by_id = {id(ck): role for role, ck in roles.items()}
            names = [by_id.get(id(ck), ck.ref) for ck in plan.sources]
            bad = execute(
                plan, writers, device, progress or NullProgress(), strict=strict, names=names
            )
            if bad:
                warnings.warn(
                    f"{len(bad)} input tensor(s) hold NaN or inf values, merged as they "
                    f"are: {first_few(bad)}; --strict refuses such inputs",
                    stacklevel=3,
                )
            hashes = hash_job.wait()
            for k, (d, w) in enumerate(zip(tmp_dirs, writers, strict=True)):
                rec = recipe(k, hashes)
                main, side, specs = layouts(plan, base, max_bytes, metadata(rec, plan))
                w.rewrite_headers(main + side)
                w.close()
                if len(main) > 1:
                    (d / f"{base}.safetensors.index.json").write_text(
                        index_json(main, specs, {"sgmerge.recipe": json.dumps(rec, sort_keys=True)})
                    )
                for lay in side:
                    meta_file = SIDE_WEIGHT_FILES.get(lay.filename)
                    if meta_file and side_dir is not None and (side_dir / meta_file).is_file():
                        shutil.copyfile(side_dir / meta_file, d / meta_file)
                finish(k, d, rec)
        finally:
            for w in writers:
                w.close(sync=False)
        if len(dirs) > 1:
            manifest = {
                "toolkit": TOOLKIT,
                "outputs": dict(zip(labels, [d.name for d in dirs], strict=True)),
            }
            (tmp / "sgmerge.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if recipe_yaml:
                from mergekit_sg.io.card import RECIPE_FILE

                (tmp / RECIPE_FILE).write_text(recipe_yaml)
