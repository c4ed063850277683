"""The merge plan: pairs the keys of two checkpoints, validates them before anything is
written, resolves each tensor's rule and output dtype, and keeps tied weights tied."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch

from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.io.checkpoint import Checkpoint
from mergekit_sg.io.dtypes import user_dtype
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.merge.rules import AlphaFor, TensorRule, parse_alpha_for, rule_for

INTEGER_WHY = "integer: must be equal in both"


@dataclass(frozen=True)
class PlanEntry:
    """One output tensor and where its inputs come from."""

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    rule: TensorRule
    src_pre: str
    src_ft: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class MergePlan:
    """Everything the executor needs; validated, in the fine-tuned file order."""

    entries: list[PlanEntry]
    alphas: tuple[float, ...]
    compute_dtype: torch.dtype
    aliases: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _sources(name: str, ck: Checkpoint) -> str | None:
    """The stored tensor that provides `name` in `ck` (itself, or the tensor it is tied to)."""
    if name in ck.tensors:
        return name
    return ck.aliases.get(name)


def build_plan(pre: Checkpoint, ft: Checkpoint, opts: InterpolateOptions) -> MergePlan:
    alphas = tuple(opts.alpha)
    warnings = [
        f"alpha={a:g} is outside [0, 1]: this extrapolates beyond the endpoints"
        for a in alphas
        if not 0.0 <= a <= 1.0
    ]
    alpha_for = parse_alpha_for(opts.alpha_for)
    warnings += [
        f"--alpha-for {r.pattern!r}={r.alpha:g} is outside [0, 1]: extrapolation"
        for r in alpha_for
        if not 0.0 <= r.alpha <= 1.0
    ]
    names_pre = set(pre.tensors) | set(pre.aliases)
    names_ft = set(ft.tensors) | set(ft.aliases)
    only_ft = sorted(names_ft - names_pre)
    only_pre = sorted(names_pre - names_ft)
    if only_ft or only_pre:
        parts = []
        if only_ft:
            parts.append(f"{len(only_ft)} key(s) only in {ft.ref}: {first_few(only_ft)}")
        if only_pre:
            parts.append(f"{len(only_pre)} key(s) only in {pre.ref}: {first_few(only_pre)}")
        raise SgMergeError("checkpoints do not match: " + "; ".join(parts))

    # Tied in both inputs (same kept tensor) -> written once and recorded as tied.
    aliases = {a: k for a, k in ft.aliases.items() if _sources(a, pre) == _sources(k, pre)}
    out_dtype_opt = user_dtype(opts.dtype) if opts.dtype else None
    order = list(ft.tensors) + [a for a in ft.aliases if a not in aliases]
    entries: list[PlanEntry] = []
    shape_bad: list[str] = []
    kind_bad: list[str] = []
    for name in order:
        sp, sf = _sources(name, pre), _sources(name, ft)
        assert sp is not None and sf is not None
        ip, i_f = pre.tensors[sp], ft.tensors[sf]
        if ip.shape != i_f.shape:
            shape_bad.append(f"{name} {list(ip.shape)} vs {list(i_f.shape)}")
            continue
        if ip.dtype.is_floating_point != i_f.dtype.is_floating_point:
            kind_bad.append(f"{name} ({ip.dtype} vs {i_f.dtype})")
            continue
        if i_f.dtype.is_floating_point:
            rule = rule_for(name, alphas, alpha_for, opts.exclude, opts.only, opts.excluded_from)
            out_dtype = out_dtype_opt or i_f.dtype
        else:
            rule = rule_for(name, alphas, [], opts.exclude, opts.only, opts.excluded_from)
            if rule.kind == "lerp":
                rule = TensorRule("copy", side="finetuned", why=INTEGER_WHY)
            out_dtype = i_f.dtype
        entries.append(PlanEntry(name, i_f.shape, out_dtype, rule, sp, sf))
    warnings += unmatched_patterns(order, opts.exclude, opts.only, alpha_for)
    if shape_bad:
        raise SgMergeError(f"{len(shape_bad)} shape mismatch(es): {first_few(shape_bad)}")
    if kind_bad:
        raise SgMergeError(
            f"{len(kind_bad)} tensor(s) floating on one side only: {first_few(kind_bad)}"
        )
    _check_integer_tensors(pre, ft, entries)
    return MergePlan(entries, alphas, user_dtype(opts.compute_dtype), aliases, warnings)


def unmatched_patterns(
    names: list[str], exclude: list[str], only: list[str], alpha_for: list[AlphaFor]
) -> list[str]:
    """A warning for each --exclude/--only/--alpha-for pattern that matches no tensor name (a
    typo would otherwise silently merge everything). A classifier head file merged beside its
    tower (only `head.weight`) is not checked: the patterns are meant for the tower."""
    if set(names) <= {"head.weight"}:
        return []
    out = []
    given = [("--exclude", p) for p in exclude] + [("--only", p) for p in only]
    given += [("--alpha-for", r.pattern) for r in alpha_for]
    for flag, pat in given:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            out.append(
                f"{flag} {pat!r} matches no tensor (names look like {first_few(names[:3])}); "
                "it changes nothing"
            )
    return out


def _check_integer_tensors(pre: Checkpoint, ft: Checkpoint, entries: list[PlanEntry]) -> None:
    """Integer buffers cannot be interpolated: they must be equal, checked before writing."""
    for e in entries:
        if e.rule.why != INTEGER_WHY:
            continue
        a, b = pre.read(e.src_pre), ft.read(e.src_ft)
        if a.dtype != b.dtype or not torch.equal(a, b):
            raise SgMergeError(
                f"integer tensor {e.name!r} differs between {pre.ref} and {ft.ref}; "
                "integer buffers cannot be interpolated (use --exclude to copy one side)"
            )
