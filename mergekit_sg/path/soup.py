"""`soup`: model soups of fine-tuned candidates (Wortsman et al. 2022). The uniform soup is
the mean of all candidates; the greedy soup ranks them by a held-out evaluator and adds each in
turn when the running uniform average scores better with it (merge/soup.py). The search runs in
memory on one live model (candidates read once, each trial loaded in place, the scan's
evaluators); the soup is then written by the streaming executor as a `linear` merge with equal
weights of the kept candidates,

    theta_soup = (1 / |S|) * sum_{i in S} theta_i,

and its card lists every candidate, its score, the soup's score with it, and whether it was
kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import Evaluator
from mergekit_sg.executors import make_executor
from mergekit_sg.io.progress import Progress
from mergekit_sg.jobs import Executor, Job, resources_for, run_jobs, worker_device
from mergekit_sg.merge.merge import MergeResult, merge
from mergekit_sg.merge.options import RunOptions
from mergekit_sg.merge.soup import SoupResult, SoupStep, greedy_soup, greedy_soup_sets, mean_state
from mergekit_sg.models.adapters import load_model
from mergekit_sg.models.linear_path import checkpoint_names, load_live, read_tensors
from mergekit_sg.options import build_options
from mergekit_sg.path.options import SoupOptions
from mergekit_sg.path.run import make_evaluators, resolve_device

StateDict = dict[str, torch.Tensor]


@dataclass
class SoupReport:
    candidates: list[str]
    soup: SoupResult | None  # None when nothing was evaluated (a uniform soup without --eval)
    merged: MergeResult
    greedy: bool

    @property
    def kept(self) -> list[str]:
        if self.soup is None:
            return list(self.candidates)
        return [self.candidates[i] for i in self.soup.ingredients]


def oriented_score(evaluators: list[Evaluator], metrics: dict[str, dict[str, float]]) -> float:
    """Mean over evaluators of the primary metric, negated where lower is better."""
    vals = []
    for ev in evaluators:
        v = metrics[ev.name][ev.primary]
        vals.append(-v if ev.primary in ev.lower_is_better else v)
    return sum(vals) / len(vals)


def score_members(
    model: str,
    first: str,
    members: list[str],
    eval_specs: list[str],
    device: str,
    evaluators: list[Evaluator] | None = None,
) -> float:
    """One soup evaluation as an independent job: load the live model from `first` (the
    first candidate, as the in-process soup does), read the `members`' tensors, put the live
    model at their uniform average (`mean_state`; one member: that candidate as it is) and
    return the oriented held-out score. The same number the in-process soup gets."""
    dev = resolve_device(worker_device(device))
    evs = make_evaluators(eval_specs, evaluators)
    lm = load_model(model, first, dev)
    names = checkpoint_names(lm.module, lm.rename)
    d = next(lm.module.parameters()).device
    states = [read_tensors(r, names, d, lm.side_weights) for r in members]
    load_live(lm.module, states[0] if len(states) == 1 else mean_state(states), lm.rename)
    return oriented_score(evs, {ev.name: ev(lm) for ev in evs})


def _soup_on_jobs(
    executor: Executor, refs: list[str], opts: SoupOptions, evaluators: list[Evaluator] | None
) -> SoupResult:
    """The soup search with every evaluation a job (`score_members`): the candidates alone
    (and, for the uniform soup, the soup) in one parallel batch, then each greedy trial."""
    assert opts.model is not None
    res = resources_for(opts.device, opts.ray_cpus, executor.gpus_available())

    def score_sets(sets: list[list[int]]) -> list[float]:
        jobs = [
            Job(
                "soup of " + "+".join(str(i) for i in s),
                score_members,
                {
                    "model": opts.model,
                    "first": refs[0],
                    "members": [refs[i] for i in s],
                    "eval_specs": list(opts.eval),
                    "device": opts.device,
                    "evaluators": list(evaluators) if evaluators else None,
                },
                res,
            )
            for s in sets
        ]
        got: dict[str, float] = {}
        run_jobs(executor, jobs, lambda j, v: got.__setitem__(j.name, float(v)))
        return [got[j.name] for j in jobs]

    n = len(refs)
    if opts.greedy:
        return greedy_soup_sets(n, score_sets)
    scores = score_sets([[i] for i in range(n)] + [list(range(n))])
    steps = [SoupStep(i, scores[i], True) for i in range(n)]
    return SoupResult(list(range(n)), scores[:n], scores[n], steps)


def _uniform(candidates: list[StateDict], score: Any) -> SoupResult:
    """Every candidate in; each scored alone, then their mean (float32 sum, rounded once)."""
    individual = [float(score(c)) for c in candidates]
    first = candidates[0]
    state = {}
    for k, v in first.items():
        if not v.is_floating_point():
            state[k] = v
            continue
        total = v.float()
        for c in candidates[1:]:
            total = total + c[k].float()
        state[k] = (total / len(candidates)).to(v.dtype)
    s = float(score(state))
    steps = [SoupStep(i, individual[i], True) for i in range(len(candidates))]
    return SoupResult(list(range(len(candidates))), individual, s, steps, state)


def card_table(candidates: list[str], res: SoupResult, greedy: bool) -> str:
    """Markdown: what went in and why."""
    how = (
        "Greedy soup: candidates ranked by their own held-out score; each next one is added when "
        "the uniform average with it scores higher than without (score: higher is better)."
        if greedy
        else "Uniform soup: the mean of every candidate (scores for reference; higher is better)."
    )
    lines = [
        how,
        "",
        "| order | candidate | score alone | soup score with it | kept |",
        "|---|---|---|---|---|",
    ]
    for k, st in enumerate(res.steps):
        lines.append(
            f"| {k + 1} | `{candidates[st.candidate]}` | {res.individual[st.candidate]:.6g} | "
            f"{st.score:.6g} | {'yes' if st.added else 'no'} |"
        )
    lines += ["", f"Soup score: {res.score:.6g} ({len(res.ingredients)} of {len(candidates)})."]
    return "\n".join(lines)


def soup(
    candidates: list[str | Path],
    out: str | Path,
    options: SoupOptions | None = None,
    evaluators: list[Evaluator] | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    **kwargs: Any,
) -> SoupReport:
    """The (greedy) soup of `candidates`, written to `out` (see the module doc). With `--ray`
    (or an `executor`) every evaluation is a job: same choices, scores and bytes."""
    opts: SoupOptions = build_options(SoupOptions, options, kwargs)
    refs = [str(c) for c in candidates]
    if not refs:
        raise SgMergeError("soup: give at least one fine-tuned checkpoint")
    if len(set(refs)) != len(refs):
        raise SgMergeError("soup: a candidate is given twice")
    evaluate = bool(opts.eval or evaluators)
    if opts.greedy and not evaluate:
        raise SgMergeError("--greedy needs a held-out evaluator: give --model and --eval")
    if evaluate and not opts.model:
        raise SgMergeError("--eval needs --model (the live model the evaluators run on)")
    res: SoupResult | None = None
    if evaluate and (executor is not None or opts.ray):
        res = _soup_on_jobs(executor or make_executor(opts.ray), refs, opts, evaluators)
    elif evaluate:
        assert opts.model is not None
        evs = make_evaluators(opts.eval, evaluators)
        lm = load_model(opts.model, refs[0], resolve_device(opts.device))
        names = checkpoint_names(lm.module, lm.rename)
        dev = next(lm.module.parameters()).device
        states = [read_tensors(r, names, dev, lm.side_weights) for r in refs]

        def score(state: StateDict) -> float:
            load_live(lm.module, state, lm.rename)
            return oriented_score(evs, {ev.name: ev(lm) for ev in evs})

        res = greedy_soup(states, score) if opts.greedy else _uniform(states, score)
        del states
    kept = [refs[i] for i in res.ingredients] if res is not None else refs
    config: dict[str, Any] = {
        "merge_method": "linear",
        "models": [{"model": r, "parameters": {"weight": 1.0}} for r in kept],
    }
    if opts.dtype:
        config["out_dtype"] = opts.dtype
    sections: list[tuple[str, str]] = []
    extra: dict[str, Any] = {"soup": {"greedy": opts.greedy, "candidates": refs}}
    if res is not None:
        sections.append(("Soup", card_table(refs, res, opts.greedy)))
        extra["soup"].update(res.record())
        extra["soup"]["evaluators"] = list(opts.eval)
    run = RunOptions(**{k: getattr(opts, k) for k in RunOptions.model_fields})
    merged = merge(
        config, out, run=run, progress=progress, card_sections=sections, recipe_extra=extra
    )
    return SoupReport(refs, res, merged, opts.greedy)


__all__ = ["SoupOptions", "SoupReport", "card_table", "oriented_score", "score_members", "soup"]
