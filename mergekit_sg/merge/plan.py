"""The merge plan: pairs the keys of the N inputs, validates them before anything is written
(key sets, shapes, floating vs integer), resolves each tensor's method parameters per output
(or the input it is copied from) and its output dtype, and keeps tied weights tied.

A plan is method-agnostic: each entry names, per method input slot, the checkpoint and the
stored tensor to read, and one `Params` per output. `build_plan` makes the WiSE-FT plan of
`interpolate` (method `lerp`, or `fisher` with Fisher files); `build_merge_plan` the plan of
any method over N inputs (`merge`)."""

from __future__ import annotations

import fnmatch
import math
import warnings as _warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.io.checkpoint import Checkpoint
from mergekit_sg.io.dtypes import user_dtype
from mergekit_sg.merge.methods import Method, Params
from mergekit_sg.merge.methods.linear import Fisher, FisherShared, Lerp, LerpParams, Weight
from mergekit_sg.merge.options import InterpolateOptions
from mergekit_sg.merge.rules import AlphaFor, TensorRule, parse_alpha_for, rule_for

INTEGER_WHY = "integer: must be equal in both"

# (checkpoint index in MergePlan.sources, stored tensor name), or None: no such tensor there
Slot = tuple[int, str] | None


@dataclass(frozen=True)
class PlanEntry:
    """One output tensor: where each method input comes from, and per output either the
    method's parameters or (params None) a copy of slot `copy_slot`."""

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    slots: tuple[Slot, ...]
    params: tuple[Params, ...] | None
    copy_slot: int = 0
    why: str = "default"
    group: str = ""  # "" for the main weights, else the side weight file it belongs to

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def copied(self) -> bool:
        return self.params is None

    @property
    def rule(self) -> TensorRule:
        """The entry as interpolate's rule ('copy' from a side, or 'lerp' at its alphas)."""
        if self.params is None:
            return TensorRule("copy", side="pretrained" if self.copy_slot == 0 else "finetuned",
                              why=self.why)  # fmt: skip
        alphas = tuple(float(getattr(p.shared, "alpha", math.nan)) for p in self.params)
        return TensorRule("lerp", alphas=alphas, why=self.why)


@dataclass
class MergePlan:
    """Everything the executor needs; validated, in output order."""

    entries: list[PlanEntry]
    method: Method
    sources: list[Checkpoint]
    compute_dtype: torch.dtype
    n_outputs: int
    aliases: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seed: int = 0
    alphas: tuple[float, ...] = ()  # interpolate's alphas (one per output)


def _sources(name: str, ck: Checkpoint) -> str | None:
    """The stored tensor that provides `name` in `ck` (itself, or the tensor it is tied to)."""
    if name in ck.tensors:
        return name
    return ck.aliases.get(name)


def _names(ck: Checkpoint) -> set[str]:
    return set(ck.tensors) | set(ck.aliases)


def _group(ck: Checkpoint, name: str) -> str:
    src = _sources(name, ck)
    return ck.tensors[src].group if src is not None else ""


# the marker of an embedding classifier's head (models/embedding_classifier.py writes it)
EMBEDDING_HEAD_META = "sgmerge_head.json"
KEPT_WHY = "only in the fine-tuned model: kept"


def _common_names(
    cks: Sequence[Checkpoint], warn: list[str], order: int = -1
) -> tuple[set[str], set[str]]:
    """The names every input has, and the names kept from `cks[order]` alone. A side weight
    file (classifier head) missing from some input is left out with a warning, except an
    embedding classifier's head that only the output-order model has (a fine-tune against its
    bare pretrained encoder, e.g. the package model): the encoder merges, that head is kept as
    it is. Any other difference is an error."""
    names = [_names(c) for c in cks]
    groups = {(_group(c, n)) for c, ns in zip(cks, names, strict=True) for n in ns} - {""}
    oc = cks[order]
    kept: set[str] = set()
    for g in sorted(groups):
        have = [c for c, ns in zip(cks, names, strict=True) if any(_group(c, n) == g for n in ns)]
        if len(have) < len(cks):
            lack = [c.ref for c in cks if c not in have]
            side = oc.side_dir
            if have == [oc] and side is not None and (side / EMBEDDING_HEAD_META).is_file():
                warn.append(
                    f"{lack[0]} has no classification head ({g}): the encoder is merged and "
                    f"{oc.ref}'s head is kept unchanged"
                )
                kept |= {n for n in names[cks.index(oc)] if _group(oc, n) == g}
            else:
                warn.append(
                    f"{have[0].ref} has a classification head ({g}) but {lack[0]} has none: the "
                    "head is left out and the output is a plain model"
                )
            names = [{n for n in ns if _group(c, n) != g} for c, ns in zip(cks, names, strict=True)]
    ref, ref_names = cks[-1], names[-1]
    for c, ns in zip(cks, names, strict=True):
        only_c, only_ref = sorted(ns - ref_names), sorted(ref_names - ns)
        if only_c or only_ref:
            parts = []
            if only_ref:
                parts.append(f"{len(only_ref)} key(s) only in {ref.ref}: {first_few(only_ref)}")
            if only_c:
                parts.append(f"{len(only_c)} key(s) only in {c.ref}: {first_few(only_c)}")
            raise SgMergeError("checkpoints do not match: " + "; ".join(parts))
    return ref_names | kept, kept


# resolve(name, floating) -> (params per output or None, copy_slot, why)
Resolver = Callable[[str, bool], tuple[tuple[Params, ...] | None, int, str]]


def plan_entries(
    cks: Sequence[Checkpoint],
    order: int,
    resolve: Resolver,
    out_dtype: torch.dtype | None,
    warn: list[str],
) -> tuple[list[PlanEntry], dict[str, str]]:
    """Entries for slots `cks` (slot i reads cks[i], which is also source i), in the output
    order of cks[order]; tensors tied in every input are written once and recorded as tied."""
    names, kept = _common_names(cks, warn, order)
    oc = cks[order]
    aliases = {
        a: k
        for a, k in oc.aliases.items()
        if a in names and all(_sources(a, c) == _sources(k, c) for c in cks)
    }
    seq = [n for n in oc.tensors if n in names] + [
        a for a in oc.aliases if a in names and a not in aliases
    ]
    entries: list[PlanEntry] = []
    shape_bad: list[str] = []
    kind_bad: list[str] = []
    for name in seq:
        srcs = [_sources(name, c) for c in cks]
        infos = [c.tensors[s] for c, s in zip(cks, srcs, strict=True) if s is not None]
        shapes = {tuple(i.shape) for i in infos}
        if len(shapes) > 1:
            shape_bad.append(f"{name} " + " vs ".join(str(list(i.shape)) for i in infos))
            continue
        if len({i.dtype.is_floating_point for i in infos}) > 1:
            kind_bad.append(f"{name} (" + " vs ".join(str(i.dtype) for i in infos) + ")")
            continue
        ref = oc.tensors[_sources(name, oc)]  # type: ignore[index]
        floating = ref.dtype.is_floating_point
        if name in kept:  # one slot only (the output-order model's): copy it
            params, copy_slot, why = None, 0, KEPT_WHY
        else:
            params, copy_slot, why = resolve(name, floating)
        dtype = (out_dtype or ref.dtype) if floating else ref.dtype
        slots = tuple((i, s) for i, s in enumerate(srcs) if s is not None)
        entries.append(
            PlanEntry(name, ref.shape, dtype, slots, params, copy_slot, why, ref.group)  # type: ignore[arg-type]
        )
    if shape_bad:
        raise SgMergeError(f"{len(shape_bad)} shape mismatch(es): {first_few(shape_bad)}")
    if kind_bad:
        raise SgMergeError(
            f"{len(kind_bad)} tensor(s) floating on one side only: {first_few(kind_bad)}"
        )
    _check_integer_tensors(cks, entries)
    return entries, aliases


def _check_integer_tensors(cks: Sequence[Checkpoint], entries: list[PlanEntry]) -> None:
    """Integer buffers cannot be merged: they must be equal in every input, checked before
    writing."""
    for e in entries:
        if e.why != INTEGER_WHY:
            continue
        first = None
        for c, s in zip(cks, e.slots, strict=True):
            assert s is not None
            t = c.read(s[1])
            if first is None:
                first = t
            elif t.dtype != first.dtype or not torch.equal(t, first):
                raise SgMergeError(
                    f"integer tensor {e.name!r} differs between {cks[0].ref} and {c.ref}; "
                    "integer buffers cannot be interpolated (use --exclude to copy one side)"
                )


# --- interpolate's plan ------------------------------------------------------------------------


def _rule_params(rule: TensorRule, fisher: tuple[float, bool] | None) -> tuple[Params, ...]:
    if fisher is None:
        return tuple(Params(LerpParams(alpha=a), (None, None)) for a in rule.alphas)
    floor, _ = fisher
    return tuple(
        Params(FisherShared(fisher_floor=floor), (Weight(weight=1.0 - a), Weight(weight=a)))
        for a in rule.alphas
    )


def build_plan(
    pre: Checkpoint,
    ft: Checkpoint,
    opts: InterpolateOptions,
    fisher: Sequence[Checkpoint] = (),
) -> MergePlan:
    """The WiSE-FT plan: slots (pretrained, fine-tuned) and, with `fisher`, the two Fisher
    checkpoints as slots 2 and 3 (looked up per tensor; missing entries give plain lerp)."""
    alphas = tuple(opts.alpha)
    warn = [
        f"alpha={a:g} is outside [0, 1]: this extrapolates beyond the endpoints"
        for a in alphas
        if not 0.0 <= a <= 1.0
    ]
    alpha_for = parse_alpha_for(opts.alpha_for)
    warn += [
        f"--alpha-for {r.pattern!r}={r.alpha:g} is outside [0, 1]: extrapolation"
        for r in alpha_for
        if not 0.0 <= r.alpha <= 1.0
    ]
    side = {"pretrained": 0, "finetuned": 1}
    fisher_on = (opts.fisher_floor, True) if fisher else None

    def resolve(name: str, floating: bool) -> tuple[tuple[Params, ...] | None, int, str]:
        rule = rule_for(
            name, alphas, alpha_for if floating else [], opts.exclude, opts.only, opts.excluded_from
        )
        if rule.kind == "copy":
            return None, side[rule.side], rule.why
        if not floating:
            return None, 1, INTEGER_WHY
        return _rule_params(rule, fisher_on), 0, rule.why

    out_dtype = user_dtype(opts.dtype) if opts.dtype else None
    entries, aliases = plan_entries([pre, ft], 1, resolve, out_dtype, warn)
    warn += unmatched_patterns([e.name for e in entries], opts.exclude, opts.only, alpha_for)
    method: Method = Lerp()
    sources = [pre, ft]
    if fisher:
        if len(fisher) != 2:
            raise SgMergeError("--fisher takes two files: F_PRETRAINED,F_FINETUNED")
        bad = [a for a in alphas if not 0.0 <= a <= 1.0]
        bad += [
            p.per_input[1].weight  # type: ignore[union-attr]
            for e in entries
            if e.params
            for p in e.params
            if not 0.0 <= p.per_input[1].weight <= 1.0  # type: ignore[union-attr]
        ]
        if bad:
            raise SgMergeError(
                f"alpha={bad[0]:g}: Fisher-weighted interpolation needs 0 <= alpha <= 1"
            )
        method, sources = Fisher(), [pre, ft, *fisher]
        entries = [with_fisher(e, fisher) for e in entries]
        missing = [e.name for e in entries if not e.copied and len(e.slots) < 4]
        if missing:
            _warnings.warn(
                f"{len(missing)} tensor(s) have no Fisher entry and were interpolated linearly: "
                f"{first_few(missing)}",
                stacklevel=3,
            )
    return MergePlan(
        entries,
        method,
        sources,
        user_dtype(opts.compute_dtype),
        len(alphas),
        aliases,
        warn,
        alphas=alphas,
    )


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


def with_fisher(e: PlanEntry, fisher: Sequence[Checkpoint]) -> PlanEntry:
    """Add the Fisher slots (N .. 2N-1, one per model slot) of a merged entry where every
    Fisher file has it (looked up by the output name, then the model's stored name)."""
    if e.copied:
        return e
    found: list[Slot] = []
    for k, (ck, slot) in enumerate(zip(fisher, e.slots, strict=True)):
        src = next((n for n in (e.name, slot[1] if slot else e.name) if n in ck.tensors), None)
        if src is not None and tuple(ck.tensors[src].shape) != tuple(e.shape):
            raise SgMergeError(
                f"--fisher {ck.ref}: {src!r} has shape {list(ck.tensors[src].shape)}, "
                f"the weights {list(e.shape)}"
            )
        found.append((len(fisher) + k, src) if src is not None else None)
    if any(f is None for f in found):
        return e
    return PlanEntry(
        e.name, e.shape, e.out_dtype, (*e.slots, *found), e.params, e.copy_slot, e.why, e.group
    )
