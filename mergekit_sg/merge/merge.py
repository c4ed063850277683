"""`merge`: any method over N checkpoints from a mergekit config (or our dict of the same
keys), streamed through the one executor, several parameter settings (a grid) in one pass.

    merge("ties.yml", "out/")                                   # one output
    merge(cfg, "out/", grid={"lambda": [0.3, 0.5, 0.7]})         # out/lambda-0.3, ...

What to merge is the config (`MergeSpec`); how to run it is `RunOptions`; delivery
(`push_to_hub`) is the caller's. Every check (config keys, method, parameter ranges, the
base, key sets and shapes of all inputs) happens before anything is written."""

from __future__ import annotations

import contextlib
import itertools
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mergekit_sg.alphas import parse_values
from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.io.atomic import check_destination
from mergekit_sg.io.card import front_matter, pipeline_for, recipe_block, render_card
from mergekit_sg.io.checkpoint import Checkpoint, open_checkpoint
from mergekit_sg.io.dtypes import user_dtype
from mergekit_sg.io.progress import Progress
from mergekit_sg.io.safetensors_write import parse_size
from mergekit_sg.io.sidefiles import copy_side_files
from mergekit_sg.merge.mergekit_config import (
    MergeSpec,
    layer_t,
    num_layers,
    parse_config,
    resolve,
)
from mergekit_sg.merge.methods import Method, Params, get_method
from mergekit_sg.merge.options import RunOptions
from mergekit_sg.merge.output import write_plan
from mergekit_sg.merge.plan import INTEGER_WHY, MergePlan, plan_entries, with_fisher
from mergekit_sg.merge.provenance import source_record
from mergekit_sg.version import TOOLKIT


@dataclass
class MergeResult:
    out: Path
    outputs: dict[str, Path]  # grid label ('' for a single output) -> folder
    plan: MergePlan


def as_spec(config: str | Path | Mapping[str, Any] | MergeSpec) -> MergeSpec:
    if isinstance(config, MergeSpec):
        return config
    return parse_config(dict(config) if isinstance(config, Mapping) else config)


def check_inputs(spec: MergeSpec, method: Method) -> tuple[list[str], list[int | None]]:
    """The slot references and their model entries; the base and input-count checks."""
    refs = [m.model for m in spec.models]
    if method.base == "required":
        if not spec.base_model:
            raise SgMergeError(f"base_model: {method.name} needs a base model")
        others = [i for i, r in enumerate(refs) if r != spec.base_model]
        n = len(others)
        lo, hi = method.min_models, method.max_models
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo + 1}" if hi == lo else f"at least {lo + 1}"
            raise SgMergeError(
                f"models: {method.name} takes {want} models (the base and "
                f"{'one other' if hi == lo == 1 else 'the others'}), got {n + 1}"
            )
        return [spec.base_model, *[refs[i] for i in others]], [None, *others]
    if not refs:
        raise SgMergeError(f"models: {method.name} needs at least one model")
    if method.max_models is not None and len(refs) != method.max_models:
        raise SgMergeError(f"models: {method.name} takes {method.max_models} models")
    return refs, list(range(len(refs)))


def _grid_points(grid: Mapping[str, Sequence[float]] | None) -> list[dict[str, float]]:
    if not grid:
        return [{}]
    keys = list(grid)
    for k, vs in grid.items():
        if not vs:
            raise SgMergeError(f"--param {k}: give at least one value")
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def parse_grid(items: Sequence[str]) -> dict[str, list[float]]:
    """`--param` values as a grid: 'lambda=0.3,0.5,0.7' or 'lambda=0:1:0.25' (read as
    `scan --alphas`, `parse_values`); repeat for a product of several parameters."""
    grid: dict[str, list[float]] = {}
    for item in items:
        name, sep, vals = item.partition("=")
        name = name.strip()
        if not sep or not name or not vals.strip():
            raise SgMergeError(f"--param {item!r}: write NAME=V1,V2,... or NAME=START:STOP:STEP")
        if name in grid:
            raise SgMergeError(f"--param {name}: given twice; list all its values in one --param")
        grid[name] = parse_values(vals, f"--param {name}")
    return grid


def grid_label(point: Mapping[str, float]) -> str:
    return "_".join(f"{k}-{v:g}" for k, v in point.items())


def _validate(model: type[BaseModel], values: dict[str, Any], where: str) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SgMergeError(f"{where}{loc}: {err['msg'].removeprefix('Value error, ')}") from None


def _fields(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(attribute, config key) of a parameter model."""
    return [(n, f.alias or n) for n, f in model.model_fields.items()]


class ParamResolver:
    """A method's parameters for each tensor and output, from the spec and a grid point."""

    def __init__(self, spec: MergeSpec, method: Method, entries: list[int | None]) -> None:
        self.spec, self.method, self.entries = spec, method, entries
        known = {k for _, k in _fields(method.Shared)} | {k for _, k in _fields(method.PerInput)}
        for key in spec.parameters:
            if key not in known:
                raise SgMergeError(f"parameters.{key}: not a parameter of {method.name}")
        for i, m in enumerate(spec.models):
            for key in m.parameters:
                if key not in known:
                    raise SgMergeError(
                        f"models[{i}].parameters.{key}: not a parameter of {method.name}"
                    )

    def params(self, name: str, t: float, point: Mapping[str, float]) -> Params:
        shared_vals: dict[str, Any] = {}
        for _, key in _fields(self.method.Shared):
            found, v = resolve(key, [dict(point), self.spec.parameters], name, t)
            if found:
                shared_vals[key] = v
        shared = _validate(self.method.Shared, shared_vals, "parameters.")
        per: list[BaseModel | None] = []
        grid_in = {k: v for k, v in point.items() if k in self.method.grid_per_input}
        for idx in self.entries:
            if idx is None:
                per.append(None)
                continue
            vals: dict[str, Any] = {}
            scopes = [grid_in, self.spec.models[idx].parameters, self.spec.parameters]
            for _, key in _fields(self.method.PerInput):
                found, v = resolve(key, scopes, name, t)
                if found:
                    vals[key] = v
            per.append(_validate(self.method.PerInput, vals, f"models[{idx}].parameters."))
        return Params(shared, tuple(per))


def split_fisher(
    spec: MergeSpec, method: Method, entries: list[int | None]
) -> tuple[MergeSpec, list[str]]:
    """For `fisher`: each model's `fisher` parameter (its Fisher file, from `sgmerge fisher`)
    taken out of the parameters; the spec as is for the other methods."""
    if method.name != "fisher":
        return spec, []
    refs = []
    for e in entries:
        assert e is not None
        ref = spec.models[e].parameters.get("fisher")
        if not isinstance(ref, str):
            raise SgMergeError(
                f"models[{e}].parameters.fisher: the fisher method needs each model's Fisher file"
            )
        refs.append(ref)
    models = [
        m.model_copy(
            update={"parameters": {k: v for k, v in m.parameters.items() if k != "fisher"}}
        )
        for m in spec.models
    ]
    return spec.model_copy(update={"models": models}), refs


def add_fisher(plan: MergePlan, fisher: list[Checkpoint]) -> None:
    """Give every merged entry its Fisher slots; tensors without Fisher entries are averaged
    linearly (warned)."""
    n = len(plan.sources)
    plan.entries = [with_fisher(e, fisher) for e in plan.entries]
    plan.sources = [*plan.sources, *fisher]
    missing = [e.name for e in plan.entries if not e.copied and len(e.slots) < 2 * n]
    if missing:
        plan.warnings.append(
            f"{len(missing)} tensor(s) have no Fisher entry and are averaged linearly: "
            f"{first_few(missing)}"
        )


def check_config(
    config: str | Path | Mapping[str, Any] | MergeSpec, grid: Mapping[str, Any] | None = None
) -> None:
    """The checks that need no weights: config keys, the method, the number of models and the
    base, parameter names (those of the grid included)."""
    spec = as_spec(config)
    method = get_method(spec.merge_method)
    _, entries = check_inputs(spec, method)
    ParamResolver(spec, method, entries)  # refuses parameter names the method lacks
    known = {
        f.alias or n for m in (method.Shared, method.PerInput) for n, f in m.model_fields.items()
    }
    for name in grid or {}:
        if name not in known:
            raise SgMergeError(f"--param {name}: not a parameter of {method.name}")


def _open_inputs(refs: list[str], stack: contextlib.ExitStack) -> list[Checkpoint]:
    opened: dict[str, Checkpoint] = {}
    for r in refs:
        if r not in opened:
            ck = open_checkpoint(r, side_weights=True)
            stack.callback(ck.close)
            opened[r] = ck
    return [opened[r] for r in refs]


def build_merge_plan(
    spec: MergeSpec,
    cks: list[Checkpoint],
    entries: list[int | None],
    method: Method,
    points: list[dict[str, float]],
    compute_dtype: str = "float32",
) -> MergePlan:
    """The plan of `method` over the slot checkpoints `cks`: every parameter of every tensor
    and output resolved and validated here."""
    resolver = ParamResolver(spec, method, entries)
    warn: list[str] = []
    names = list(cks[0].tensors) + list(cks[0].aliases)
    layers = num_layers(names)

    def resolve_tensor(name: str, floating: bool):  # type: ignore[no-untyped-def]
        if not floating:
            return None, 0, INTEGER_WHY
        t = layer_t(name, layers)
        return tuple(resolver.params(name, t, p) for p in points), 0, method.name

    out_dtype = spec.out_dtype or spec.dtype
    dtype = user_dtype(out_dtype) if out_dtype else None
    es, aliases = plan_entries(cks, 0, resolve_tensor, dtype, warn)
    return MergePlan(
        es,
        method,
        list(cks),
        user_dtype(compute_dtype),
        len(points),
        aliases,
        warn,
        seed=spec.seed,
    )


def merge_recipe(
    spec: MergeSpec,
    point: Mapping[str, float],
    roles: Mapping[str, Checkpoint],
    hashes: Mapping[str, Mapping[str, str]] | None,
    compute_dtype: str,
) -> dict[str, Any]:
    """What a card and the safetensors header record: the method, every parameter (the grid
    point applied), every source with its revision and hashes."""
    cfg = spec.model_dump(exclude_defaults=False)
    if point:
        cfg["grid_point"] = dict(point)
    return {
        "method": spec.merge_method,
        "config": cfg,
        "compute_dtype": compute_dtype,
        "sources": {r: source_record(ck, hashes and dict(hashes[r])) for r, ck in roles.items()},
        "toolkit": TOOLKIT,
    }


def write_merge_card(
    dest: Path,
    recipe: dict[str, Any],
    roles: Mapping[str, Checkpoint],
    extra_sections: Sequence[tuple[str, str]] = (),
) -> None:
    """README.md: every source as a base_model (Hub ids), the method and parameters, sources,
    then the caller's `extra_sections` (a soup's ingredients and why) before the recipe."""
    config = None
    if (dest / "config.json").exists():
        config = json.loads((dest / "config.json").read_text())
    bases = [ck.source.hub_id for ck in roles.values() if ck.source.hub_id]
    kinds = {ck.kind for ck in roles.values()}
    library = "transformers" if kinds == {"transformers"} else None
    meta = front_matter(
        list(dict.fromkeys(b for b in bases if b)),
        library,
        ["merge", "mergekit-sg", recipe["method"]],
        pipeline_tag=pipeline_for(config),
    )
    from mergekit_sg.merge.methods import METHODS

    doc = (METHODS[recipe["method"]].__doc__ or "").strip()
    lines = ["| role | reference | revision | file | sha256 |", "|---|---|---|---|---|"]
    for role, s in recipe["sources"].items():
        for f, h in s["sha256"].items():
            lines.append(f"| {role} | `{s['ref']}` | {s.get('commit') or '-'} | {f} | `{h}` |")
    sections = [
        ("Method", f"`{recipe['method']}`:\n\n```\n{doc}\n```"),
        ("Sources", "\n".join(lines)),
        *extra_sections,
        ("Recipe", f"Made with {TOOLKIT}.\n\n{recipe_block(recipe)}"),
    ]
    title = f"{recipe['method']} merge of " + ", ".join(ck.ref for ck in roles.values())
    (dest / "README.md").write_text(render_card(meta, title, sections))


def merge(
    config: str | Path | Mapping[str, Any] | MergeSpec,
    out: str | Path,
    grid: Mapping[str, Sequence[float]] | None = None,
    run: RunOptions | None = None,
    progress: Progress | None = None,
    card_sections: Sequence[tuple[str, str]] = (),
    recipe_extra: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> MergeResult:
    """Merge by a mergekit config into `out` (one output), or one output per grid point into
    `out/NAME-V` (several parameter settings from one read of the inputs). `card_sections`
    (title, markdown) go into every card and `recipe_extra` into every recipe (a soup's
    record of what went in and why)."""
    spec = as_spec(config)
    method = get_method(spec.merge_method)
    opts = _validate(RunOptions, {**(run.model_dump() if run else {}), **run_kwargs}, "--")
    out = Path(out)
    check_destination(out, opts.force)
    points = _grid_points(grid)
    labels = [grid_label(p) for p in points]
    if len(set(labels)) != len(labels):
        raise SgMergeError(f"--param lists the same setting twice: {', '.join(labels)}")
    dirs = [out] if len(points) == 1 else [out / lab for lab in labels]
    refs, entries = check_inputs(spec, method)
    spec_p, fisher_refs = split_fisher(spec, method, entries)
    with contextlib.ExitStack() as stack:
        cks = _open_inputs(refs, stack)
        plan = build_merge_plan(spec_p, cks, entries, method, points, opts.compute_dtype)
        if fisher_refs:
            add_fisher(plan, _open_inputs(fisher_refs, stack))
        for w in plan.warnings:
            warnings.warn(w, stacklevel=2)
        roles = {
            ("base" if e is None else f"models[{e}]"): ck
            for e, ck in zip(entries, cks, strict=True)
        }
        base_name = "open_clip_model" if cks[0].kind == "open_clip" else "model"

        def recipe(k: int, hashes: dict[str, dict[str, str]] | None) -> dict[str, Any]:
            rec = merge_recipe(spec, points[k], roles, hashes, opts.compute_dtype)
            return {**rec, **(recipe_extra or {})}

        def finish(k: int, d: Path, rec: dict[str, Any]) -> None:
            if opts.side_files:
                dt = (
                    user_dtype(spec.out_dtype or spec.dtype)
                    if (spec.out_dtype or spec.dtype)
                    else None
                )
                copy_side_files(cks[0].side_dir, d, dt)
            if opts.model_card:
                write_merge_card(d, rec, roles, card_sections)

        write_plan(
            plan,
            out,
            dirs,
            labels,
            roles,
            recipe,
            finish,
            base=base_name,
            max_bytes=parse_size(opts.max_shard_size),
            force=opts.force,
            device=opts.device,
            progress=progress,
            side_dir=cks[0].side_dir,
            strict=opts.strict,
        )
    return MergeResult(out, dict(zip(labels, dirs, strict=True)), plan)
