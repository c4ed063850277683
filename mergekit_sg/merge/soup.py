"""Greedy model soups (Wortsman et al. 2022): rank the fine-tuned candidates by a held-out
score, start from the best, and add each next candidate when the uniform average of the soup
with it scores better than the soup without it:

    soup_k = (1 / |S|) * sum_{i in S} theta_i,   S grows by candidate c iff score(S + c) > score(S)

Pure over state dicts and an evaluator callable (higher is better, or `maximize=False`);
nothing is written here, the caller streams the final soup out with `merge` (method `linear`,
equal weights over `SoupResult.ingredients`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

StateDict = Mapping[str, torch.Tensor]


@dataclass
class SoupStep:
    candidate: int
    score: float  # of the soup with the candidate in it
    added: bool


@dataclass
class SoupResult:
    ingredients: list[int]  # candidate indices in the soup, in the order they were added
    individual: list[float]  # each candidate's own score
    score: float  # the soup's score
    steps: list[SoupStep] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the soup, float32

    def record(self) -> dict[str, Any]:
        """What a card lists: what went in, and why (each candidate's try)."""
        return {
            "ingredients": self.ingredients,
            "individual_scores": self.individual,
            "soup_score": self.score,
            "steps": [vars(s) for s in self.steps],
        }


def mean_state(states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """The uniform average of `states` as the soups compute it: a float32 running sum in the
    given order, divided by their number, cast to the first state's dtype (its non-floating
    tensors as they are); the same bytes as `greedy_soup`'s trial of the same members."""
    first = states[0]
    out = {}
    for k, v in first.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        total = v.to(torch.float32, copy=True)
        for c in states[1:]:
            total = total + c[k].float()
        out[k] = (total / len(states)).to(v.dtype)
    return out


def _average(total: dict[str, torch.Tensor], n: int, like: StateDict) -> dict[str, torch.Tensor]:
    return {
        k: (v / n).to(like[k].dtype) if like[k].is_floating_point() else like[k]
        for k, v in total.items()
    }


def greedy_soup_sets(
    n: int,
    score_sets: Callable[[list[list[int]]], list[float]],
    maximize: bool = True,
) -> SoupResult:
    """The greedy soup of n candidates where `score_sets` scores a batch of member lists
    (each the uniform average of those candidates, in that order; one member: the candidate
    alone), e.g. as independent jobs: the n candidates alone in one batch, then each trial.
    Same rule, order and steps as `greedy_soup`; the soup's state is left to the caller."""
    if n < 1:
        raise ValueError("greedy_soup needs at least one candidate")
    sign = 1.0 if maximize else -1.0
    individual = [float(v) for v in score_sets([[i] for i in range(n)])]
    order = sorted(range(n), key=lambda i: -sign * individual[i])
    kept, best = [order[0]], individual[order[0]]
    steps = [SoupStep(order[0], best, True)]
    for i in order[1:]:
        score = float(score_sets([[*kept, i]])[0])
        added = sign * score > sign * best
        steps.append(SoupStep(i, score, added))
        if added:
            kept, best = [*kept, i], score
    return SoupResult(kept, individual, best, steps)


def greedy_soup(
    candidates: Sequence[StateDict],
    evaluate: Callable[[StateDict], float],
    maximize: bool = True,
) -> SoupResult:
    """The greedy soup of `candidates` under `evaluate` (see the module doc); each candidate
    is evaluated alone once and each soup trial once."""
    if not candidates:
        raise ValueError("greedy_soup needs at least one candidate")
    sign = 1.0 if maximize else -1.0
    individual = [float(evaluate(c)) for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: -sign * individual[i])
    first = candidates[order[0]]
    total = {
        k: v.to(torch.float32, copy=True) if v.is_floating_point() else v for k, v in first.items()
    }
    kept, best = [order[0]], individual[order[0]]
    steps = [SoupStep(order[0], best, True)]
    for i in order[1:]:
        trial_total = {
            k: (v + candidates[i][k].float()) if v.is_floating_point() else v
            for k, v in total.items()
        }
        score = float(evaluate(_average(trial_total, len(kept) + 1, first)))
        added = sign * score > sign * best
        steps.append(SoupStep(i, score, added))
        if added:
            total, best = trial_total, score
            kept.append(i)
    return SoupResult(kept, individual, best, steps, _average(total, len(kept), first))
