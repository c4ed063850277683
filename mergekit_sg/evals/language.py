"""Causal language-model evaluators.

`lm-perplexity`: token-level perplexity (primary), mean NLL and `probability` = exp(-NLL) (the
geometric-mean probability of a scored token, in (0, 1], higher is better, so it averages with
accuracies) on a text file (one document per line, or the whole file with `unit=file`) or JSONL
(`field=text`). Every token after a document's first is scored exactly once; documents longer
than `max_length` are cut into windows that score `stride` new tokens each (default
max_length - 1, no overlap) with the preceding max_length - stride tokens as context.
With `prompt=FIELD` and/or `response=FIELD` (JSONL or CSV rows; fields default to `prompt` and
`response`), only the response is scored, conditioned on its prompt: the prompt is tokenised
with the tokenizer's special tokens (BOS), the response without, and the response's tokens are
the targets, each given the prompt and the response before it (instruction following).

`lm-multiple-choice`: JSONL rows with a question, choices (a `choices` list, or MedMCQA's
opa..opd) and the answer (0-based index, a letter, or the choice's text; `one_based=true` for
1-based indices). Each choice is scored by the log-likelihood of " CHOICE" after the prompt
("Question: {question}\\nAnswer:"); `accuracy` takes the highest sum, `accuracy_norm` the highest
per-token mean, `loss` is the cross-entropy of the answer under a softmax over the sums."""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec
from mergekit_sg.evals.common import (
    check_primary,
    existing,
    inference,
    progress,
    read_rows,
)
from mergekit_sg.evals.specs import LmMultipleChoiceOptions, LmPerplexityOptions
from mergekit_sg.evals.text import TokenCache, length_batches, need_tokenizer, pad, pad_id
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.ensemble import Mix, mix_token_logprobs

KINDS = ("hf:causal-lm", "python")
NO_TRUNCATION = 10**9


def _check_kind(model: LoadedModel, name: str, kind: str) -> None:
    if model.kind not in KINDS:
        raise SgMergeError(f"--eval {name}: {kind} needs --model hf:causal-lm, not {model.kind}")


def default_max_length(model: LoadedModel) -> int:
    """The model's context length, capped at 1024 to bound CPU memory."""
    cfg = getattr(model.module, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return min(int(n), 1024) if n else 1024


def target_logprobs(
    model: LoadedModel,
    seqs: Sequence[Sequence[int]],
    n_targets: Sequence[int],
    *,
    batch_size: int,
    max_tokens: int,
    pad_token: int,
    label: str,
) -> list[float]:
    """For each sequence, the summed log-probability of its last `n_targets` tokens, each given
    all tokens before it in the sequence. Sequences are length-bucketed and right-padded."""
    return sum_tokens(
        token_logprobs(
            model,
            seqs,
            n_targets,
            batch_size=batch_size,
            max_tokens=max_tokens,
            pad_token=pad_token,
            label=label,
        )
    )


def sum_tokens(per_token: Sequence[torch.Tensor]) -> list[float]:
    """Each sequence's summed log-probability (exactly summed, math.fsum)."""
    return [math.fsum(t.tolist()) for t in per_token]


def token_logprobs(
    model: LoadedModel,
    seqs: Sequence[Sequence[int]],
    n_targets: Sequence[int],
    *,
    batch_size: int,
    max_tokens: int,
    pad_token: int,
    label: str,
) -> list[torch.Tensor]:
    """For each sequence, the log-probabilities (float64) of its last `n_targets` tokens, each
    given all tokens before it: what an ensemble of language models mixes token by token."""
    device = model.device
    out: list[torch.Tensor] = [torch.empty(0, dtype=torch.float64)] * len(seqs)
    extra = {"use_cache": False} if model.kind.startswith("hf:") else {}
    with inference(device), progress(label, len(seqs)) as advance:
        for b in length_batches([len(s) for s in seqs], batch_size, max_tokens):
            ids, mask = pad([seqs[i] for i in b], pad_token)
            ids, mask = ids.to(device), mask.to(device)
            res = model.module(input_ids=ids, attention_mask=mask, **extra)
            logits = res.logits if hasattr(res, "logits") else res[0]
            nll = F.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none"
            ).cpu()
            for j, i in enumerate(b):
                m = len(seqs[i])
                out[i] = -nll[j, m - 1 - n_targets[i] : m - 1].double()
            advance(len(b))
    return out


def windows(
    ids: Sequence[int], max_length: int, stride: int, first: int = 1
) -> list[tuple[list[int], int]]:
    """(input ids, number of scored tokens at its end) covering targets first..n-1 once each
    (first >= 1: token 0 has no context); the tokens before `first` are context only."""
    out = []
    t0 = max(1, first)
    while t0 < len(ids):
        t1 = min(t0 + stride, len(ids))
        start = max(0, t1 - max_length)
        out.append((list(ids[start:t1]), t1 - t0))
        t0 = t1
    return out


def response_windows(
    prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int, stride: int
) -> list[tuple[list[int], int]]:
    """Windows over prompt + response that score the response's tokens only, each once, each
    given as much of the prompt and the response before it as fits in `max_length`."""
    ids = [*prompt_ids, *response_ids]
    return windows(ids, max_length, stride, first=len(prompt_ids))


@dataclass
class Perplexity(BaseEvaluator):
    docs: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] | None = None  # (prompt, response): only responses scored
    max_length: int | None = None
    stride: int | None = None
    batch_size: int = 8
    max_tokens: int = 2048
    _cache: TokenCache = field(default_factory=TokenCache, repr=False)

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return self.scores(self.outputs(model))

    def mixed(
        self, out0: list[torch.Tensor], out1: list[torch.Tensor], alpha: float, mix: Mix
    ) -> dict[str, float]:
        """Perplexity of the mixture: token probabilities mixed, (1 - a) p0(t) + a p1(t)."""
        return self.scores(
            [mix_token_logprobs(a, b, alpha) for a, b in zip(out0, out1, strict=True)]
        )

    def scores(self, per_token: list[torch.Tensor]) -> dict[str, float]:
        """perplexity exp(nll), nll (mean over scored tokens) and probability exp(-nll)."""
        sums = sum_tokens(per_token)
        nll = -math.fsum(sums) / sum(len(t) for t in per_token)
        return {"perplexity": math.exp(nll), "nll": nll, "probability": math.exp(-nll)}

    def outputs(self, model: LoadedModel) -> list[torch.Tensor]:
        """Per scored window, the log-probabilities of its scored tokens."""
        _check_kind(model, self.name, "lm-perplexity")
        tok = need_tokenizer(model, f"--eval {self.name}")
        length = self.max_length or default_max_length(model)
        stride = self.stride or length - 1
        if not 1 <= stride < length:
            raise SgMergeError(f"--eval {self.name}: stride must be in 1..max_length-1 ({stride})")

        def build() -> list[tuple[list[int], int]]:
            if self.pairs is not None:
                prompts = [p for p, _ in self.pairs]
                responses = [r for _, r in self.pairs]
                p_ids = tok(prompts, truncation=True, max_length=NO_TRUNCATION)["input_ids"]
                r_ids = tok(
                    responses, add_special_tokens=False, truncation=True, max_length=NO_TRUNCATION
                )["input_ids"]
                return [
                    w
                    for p, r in zip(p_ids, r_ids, strict=True)
                    for w in response_windows(p, r, length, stride)
                ]
            enc = tok(self.docs, truncation=True, max_length=NO_TRUNCATION)["input_ids"]
            return [w for ids in enc for w in windows(ids, length, stride)]

        wins = self._cache.get(tok, (length, stride), build)
        if not wins:
            what = "response has a token" if self.pairs is not None else "document has two tokens"
            raise SgMergeError(f"--eval {self.name}: no {what} to score")
        return token_logprobs(
            model,
            [w for w, _ in wins],
            [n for _, n in wins],
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            pad_token=pad_id(tok),
            label=self.name,
        )


def read_documents(path: Path, unit: str, field_name: str) -> list[str]:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = read_rows(path)
        missing = [i for i, r in enumerate(rows, 1) if not isinstance(r.get(field_name), str)]
        if missing:
            raise SgMergeError(
                f"{path}: row {missing[0]} has no text field {field_name!r} (set field=FIELD; "
                "for prompt/response rows, prompt=FIELD,response=FIELD)"
            )
        docs = [r[field_name] for r in rows]
    else:
        text = path.read_text(encoding="utf-8")
        docs = [text] if unit == "file" else text.splitlines()
    return [d for d in docs if d.strip()]


def read_pairs(path: Path, prompt_field: str, response_field: str) -> list[tuple[str, str]]:
    """(prompt, response) of every row of a JSONL/CSV file; both fields must be strings."""
    rows = read_rows(path)
    for i, r in enumerate(rows, 1):
        for f in (prompt_field, response_field):
            if not isinstance(r.get(f), str):
                raise SgMergeError(
                    f"{path}: row {i} has no text field {f!r} (set prompt=FIELD,response=FIELD)"
                )
    return [(r[prompt_field], r[response_field]) for r in rows]


def lm_perplexity(spec: EvalSpec, o: LmPerplexityOptions) -> Perplexity:
    path = existing(spec.arg, spec)
    limit = o.limit
    pairs = None
    docs: list[str] = []
    if o.pairs:
        pairs = read_pairs(path, o.prompt or "prompt", o.response or "response")[:limit]
        empty = not pairs
    else:
        docs = read_documents(path, o.unit or "line", o.field or "text")[:limit]
        empty = not docs
    if empty:
        raise SgMergeError(f"--eval {spec.name}: {path} holds no text")
    metrics = ("perplexity", "nll", "probability")
    primary = check_primary(spec, o.primary or "perplexity", metrics)
    ev = Perplexity(
        spec.name,
        spec.role,
        primary,
        frozenset({"perplexity", "nll"}),
        docs=docs,
        pairs=pairs,
        max_length=o.max_length,
        stride=o.stride,
        batch_size=o.batch_size,
        max_tokens=o.max_tokens,
    )
    return ev


# ---- multiple choice --------------------------------------------------------------------------


@dataclass
class Question:
    question: str
    choices: list[str]
    answer: int


def parse_questions(
    rows: list[dict[str, Any]], path: Path, q_key: str, c_key: str, a_key: str, one_based: bool
) -> list[Question]:
    out = []
    for i, row in enumerate(rows, 1):
        where = f"{path}: row {i}"
        if q_key not in row:
            raise SgMergeError(f"{where}: no {q_key!r} field (set question=FIELD)")
        choices = row.get(c_key)
        if choices is None and "opa" in row:
            choices = [row[k] for k in ("opa", "opb", "opc", "opd", "ope") if k in row]
        if not isinstance(choices, list) or len(choices) < 2:
            raise SgMergeError(f"{where}: {c_key!r} must be a list of at least two choices")
        choices = [str(c) for c in choices]
        answer = row.get(a_key, row.get("cop") if a_key == "answer" else None)
        out.append(Question(str(row[q_key]), choices, _answer(answer, choices, one_based, where)))
    return out


def _answer(value: Any, choices: list[str], one_based: bool, where: str) -> int:
    idx: int | None = None
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        idx = int(value) - (1 if one_based else 0)
    elif isinstance(value, str):
        v = value.strip()
        if len(v) == 1 and v.upper() in string.ascii_uppercase:
            idx = string.ascii_uppercase.index(v.upper())
        elif v in choices:
            idx = choices.index(v)
    if idx is None or not 0 <= idx < len(choices):
        raise SgMergeError(
            f"{where}: answer {value!r} is not an index, letter or text of the {len(choices)} "
            "choices"
        )
    return idx


@dataclass
class MultipleChoice(BaseEvaluator):
    questions: list[Question] = field(default_factory=list)
    prompt: str = "Question: {question}\nAnswer:"
    max_length: int | None = None
    batch_size: int = 16
    max_tokens: int = 2048
    _cache: TokenCache = field(default_factory=TokenCache, repr=False)

    def sequences(self, tok: Any, length: int) -> tuple[list[list[int]], list[int]]:
        """Token ids of prompt + " choice" for every (question, choice), the choice's length."""
        seqs, counts = [], []
        for q in self.questions:
            ctx = tok(self.prompt.format(question=q.question))["input_ids"]
            for c in q.choices:
                cont = tok(" " + c, add_special_tokens=False)["input_ids"]
                seq = (list(ctx) + list(cont))[-length:]
                seqs.append(seq)
                counts.append(min(len(cont), len(seq) - 1))
        return seqs, counts

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return self.scores(self.outputs(model))

    def outputs(self, model: LoadedModel) -> list[torch.Tensor]:
        """Per (question, choice) sequence, the log-probabilities of the choice's tokens."""
        _check_kind(model, self.name, "lm-multiple-choice")
        tok = need_tokenizer(model, f"--eval {self.name}")
        length = self.max_length or default_max_length(model)
        seqs, counts = self._cache.get(tok, length, lambda: self.sequences(tok, length))
        return token_logprobs(
            model,
            seqs,
            counts,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            pad_token=pad_id(tok),
            label=self.name,
        )

    def mixed(
        self, out0: list[torch.Tensor], out1: list[torch.Tensor], alpha: float, mix: Mix
    ) -> dict[str, float]:
        """Choice scores of the mixture: token probabilities mixed, then summed in log space."""
        return self.scores(
            [mix_token_logprobs(a, b, alpha) for a, b in zip(out0, out1, strict=True)]
        )

    def scores(self, per_token: list[torch.Tensor]) -> dict[str, float]:
        """accuracy (summed log-probability), accuracy_norm (per token) and the loss of the
        answer among the choices."""
        sums = sum_tokens(per_token)
        counts = [len(t) for t in per_token]
        hits = hits_norm = 0
        loss = 0.0
        k = 0
        for q in self.questions:
            s = sums[k : k + len(q.choices)]
            n = counts[k : k + len(q.choices)]
            k += len(q.choices)
            mean = [v / max(c, 1) for v, c in zip(s, n, strict=True)]
            hits += _argmax(s) == q.answer
            hits_norm += _argmax(mean) == q.answer
            loss -= float(torch.tensor(s, dtype=torch.float64).log_softmax(0)[q.answer])
        n_q = len(self.questions)
        return {"accuracy": hits / n_q, "accuracy_norm": hits_norm / n_q, "loss": loss / n_q}


def _argmax(values: list[float]) -> int:
    """First index of the maximum (ties go to the earlier choice, deterministically)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def lm_multiple_choice(spec: EvalSpec, o: LmMultipleChoiceOptions) -> MultipleChoice:
    path = existing(spec.arg, spec)
    questions = parse_questions(read_rows(path), path, o.question, o.choices, o.answer, o.one_based)
    questions = questions[: o.limit] if o.limit else questions
    if not questions:
        raise SgMergeError(f"--eval {spec.name}: {path} holds no questions")
    prompt = (o.prompt or MultipleChoice.prompt).replace("\\n", "\n")
    if "{question}" not in prompt:
        raise SgMergeError(f"--eval {spec.name}: prompt= must contain {{question}}")
    metrics = ("accuracy", "accuracy_norm", "loss")
    ev = MultipleChoice(
        spec.name,
        spec.role,
        check_primary(spec, o.primary or "accuracy", metrics),
        frozenset({"loss"}),
        questions=questions,
        prompt=prompt,
        max_length=o.max_length,
        batch_size=o.batch_size,
        max_tokens=o.max_tokens,
    )
    return ev
