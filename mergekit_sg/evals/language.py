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
`score_first=true` also scores each document's first token, given the tokenizer's BOS token (its
EOS when it has none) as the only context, as lm-eval's `loglikelihood_rolling` does. For plain
documents the corpus-level `word_perplexity` = exp(-sum log p / words), `byte_perplexity` and
`bits_per_byte` are reported too, computed as lm-eval does (words split on whitespace, UTF-8
bytes), so they compare with lm-eval's rolling perplexity tasks.

`lm-multiple-choice`: JSONL rows with a question, choices (a `choices` list, or MedMCQA's
opa..opd) and the answer (0-based index, a letter, or the choice's text; `one_based=true` for
1-based indices). Each choice is scored by the log-likelihood of " CHOICE" after the prompt
("Question: {question}\\nAnswer:"); `accuracy` takes the highest sum, `accuracy_norm` the highest
per-token mean, `accuracy_char_norm` the highest sum per character of the choice (lm-eval's
`acc_norm`), `loss` is the cross-entropy of the answer under a softmax over the sums."""

from __future__ import annotations

import math
import re
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


def _split_head(module: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(backbone, lm_head) of a Hugging Face causal LM whose logits are lm_head(hidden) (no
    soft-capping or scaling after the head), so logits can be computed at the scored positions
    only; None otherwise (the full forward is used)."""
    cfg = getattr(module, "config", None)
    if cfg is None or not hasattr(module, "get_output_embeddings"):
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    if type(module).__name__ not in _PLAIN_HEADS:
        return None
    head = module.get_output_embeddings()
    base = getattr(module, getattr(module, "base_model_prefix", ""), None)
    if head is None or base is None or getattr(head, "bias", None) is not None:
        return None
    return base, head


# Architectures whose forward is exactly logits = lm_head(backbone(...).last_hidden_state).
_PLAIN_HEADS = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "GPT2LMHeadModel",
        "GPTNeoXForCausalLM",
        "PhiForCausalLM",
        "Phi3ForCausalLM",
        "OPTForCausalLM",
        "SmolLM3ForCausalLM",
    }
)


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
    all tokens before it in the sequence (see token_logprobs)."""
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
    given all tokens before it: what an ensemble of language models mixes token by token.
    Sequences are length-bucketed and right-padded; where the model allows it, the LM head runs
    only at the scored positions (the head is a fifth of a small LM's compute, and multiple
    choice scores a few tokens of a long prompt)."""
    device = model.device
    out: list[torch.Tensor] = [torch.empty(0, dtype=torch.float64)] * len(seqs)
    extra = {"use_cache": False} if model.kind.startswith("hf:") else {}
    split = _split_head(model.module) if model.kind.startswith("hf:") else None
    with inference(device), progress(label, len(seqs)) as advance:
        for b in length_batches([len(s) for s in seqs], batch_size, max_tokens):
            ids, mask = pad([seqs[i] for i in b], pad_token)
            ids, mask = ids.to(device), mask.to(device)
            spans = [(len(seqs[i]) - 1 - n_targets[i], len(seqs[i]) - 1) for i in b]
            if split is not None:
                base, head = split
                hidden = base(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
                rows = torch.cat([hidden[j, s:e] for j, (s, e) in enumerate(spans)])
                targets = torch.cat([ids[j, s + 1 : e + 1] for j, (s, e) in enumerate(spans)])
                nll = F.cross_entropy(head(rows).float(), targets, reduction="none").cpu()
                k = 0
                for j, i in enumerate(b):
                    n = spans[j][1] - spans[j][0]
                    out[i] = -nll[k : k + n].double()
                    k += n
            else:
                res = model.module(input_ids=ids, attention_mask=mask, **extra)
                logits = res.logits if hasattr(res, "logits") else res[0]
                nll = F.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none"
                ).cpu()
                for j, i in enumerate(b):
                    s, e = spans[j]
                    out[i] = -nll[j, s:e].double()
            advance(len(b))
    return out


def next_token_logprobs(
    model: LoadedModel,
    ctxs: Sequence[Sequence[int]],
    tokens: Sequence[Sequence[int]],
    *,
    batch_size: int,
    max_tokens: int,
    pad_token: int,
    label: str,
) -> list[list[float]]:
    """For each context, the log-probability of each candidate next token in `tokens[i]`: one
    forward per context however many candidates (choices of one token each share it)."""
    device = model.device
    out: list[list[float]] = [[] for _ in ctxs]
    extra = {"use_cache": False} if model.kind.startswith("hf:") else {}
    split = _split_head(model.module) if model.kind.startswith("hf:") else None
    with inference(device), progress(label, len(ctxs)) as advance:
        for b in length_batches([len(c) for c in ctxs], batch_size, max_tokens):
            ids, mask = pad([ctxs[i] for i in b], pad_token)
            ids, mask = ids.to(device), mask.to(device)
            rows = torch.arange(len(b), device=device)
            last = torch.tensor([len(ctxs[i]) - 1 for i in b], device=device)
            if split is not None:
                base, head = split
                hidden = base(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
                logits = head(hidden[rows, last])
            else:
                res = model.module(input_ids=ids, attention_mask=mask, **extra)
                logits = (res.logits if hasattr(res, "logits") else res[0])[rows, last]
            lp = logits.float().log_softmax(-1).cpu()
            for j, i in enumerate(b):
                out[i] = [float(lp[j, t]) for t in tokens[i]]
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


class TokenScored:
    """An LM evaluator whose outputs are per-token log-probabilities (`outputs`) and whose
    metrics are computed from them (`scores`): an ensemble of two LMs mixes token
    probabilities, (1 - a) p0(t) + a p1(t), and scores the mixture the same way."""

    def outputs(self, model: LoadedModel) -> list[torch.Tensor]:
        raise NotImplementedError

    def scores(self, per_token: list[torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return self.scores(self.outputs(model))

    def mixed(
        self, out0: list[torch.Tensor], out1: list[torch.Tensor], alpha: float, mix: Mix
    ) -> dict[str, float]:
        """The metrics of the mixture of two models' token probabilities."""
        return self.scores(
            [mix_token_logprobs(a, b, alpha) for a, b in zip(out0, out1, strict=True)]
        )


@dataclass
class Perplexity(TokenScored, BaseEvaluator):
    docs: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] | None = None  # (prompt, response): only responses scored
    max_length: int | None = None
    stride: int | None = None
    batch_size: int = 8
    max_tokens: int = 2048
    score_first: bool = False
    _cache: TokenCache = field(default_factory=TokenCache, repr=False)

    def scores(self, per_token: list[torch.Tensor]) -> dict[str, float]:
        """perplexity exp(nll), nll (mean over scored tokens) and probability exp(-nll); for
        plain documents also lm-eval's word and byte perplexity and bits per byte."""
        total = math.fsum(sum_tokens(per_token))
        nll = -total / sum(len(t) for t in per_token)
        out = {"perplexity": math.exp(nll), "nll": nll, "probability": math.exp(-nll)}
        if self.pairs is None:
            n_words = sum(len(re.split(r"\s+", d)) for d in self.docs)
            n_bytes = sum(len(d.encode("utf-8")) for d in self.docs)
            out["word_perplexity"] = math.exp(-total / n_words)
            out["byte_perplexity"] = math.exp(-total / n_bytes)
            out["bits_per_byte"] = -total / n_bytes / math.log(2)
        return out

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
            if self.score_first:
                first = prefix_token(tok)
                enc = [[first, *ids] for ids in enc]
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


def prefix_token(tok: Any) -> int:
    """The token a document's first token is scored after: BOS, else EOS (lm-eval's choice)."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tok, attr, None)
        if isinstance(value, int):
            return value
    raise SgMergeError("score_first=true needs a tokenizer with a BOS or EOS token")


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
    if pairs is None:
        metrics += ("word_perplexity", "byte_perplexity", "bits_per_byte")
    primary = check_primary(spec, o.primary or "perplexity", metrics)
    ev = Perplexity(
        spec.name,
        spec.role,
        primary,
        frozenset({"perplexity", "nll", "word_perplexity", "byte_perplexity", "bits_per_byte"}),
        docs=docs,
        pairs=pairs,
        max_length=o.max_length,
        stride=o.stride,
        batch_size=o.batch_size,
        max_tokens=o.max_tokens,
        score_first=o.score_first,
    )
    if ev.score_first and pairs is not None:
        raise SgMergeError(
            f"--eval {spec.name}: score_first=true is for plain documents (a response's first "
            "token already has its prompt as context)"
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
class MultipleChoice(TokenScored, BaseEvaluator):
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

    def outputs(self, model: LoadedModel) -> list[torch.Tensor]:
        """Per (question, choice) sequence, the log-probabilities of the choice's tokens."""
        _check_kind(model, self.name, "lm-multiple-choice")
        tok = need_tokenizer(model, f"--eval {self.name}")
        length = self.max_length or default_max_length(model)
        seqs, counts = self._cache.get(tok, length, lambda: self.sequences(tok, length))
        return self._token_scores(model, seqs, counts, pad_id(tok))

    def scores(self, per_token: list[torch.Tensor]) -> dict[str, float]:
        """accuracy (summed log-probability), accuracy_norm (per token), accuracy_char_norm
        (per character, lm-eval's acc_norm) and the loss of the answer among the choices."""
        sums = sum_tokens(per_token)
        counts = [len(t) for t in per_token]
        hits = hits_norm = hits_chars = 0
        loss = 0.0
        k = 0
        for q in self.questions:
            s = sums[k : k + len(q.choices)]
            n = counts[k : k + len(q.choices)]
            k += len(q.choices)
            mean = [v / max(c, 1) for v, c in zip(s, n, strict=True)]
            hits += _argmax(s) == q.answer
            hits_norm += _argmax(mean) == q.answer
            per_char = [v / max(len(c), 1) for v, c in zip(s, q.choices, strict=True)]
            hits_chars += _argmax(per_char) == q.answer
            loss -= float(torch.tensor(s, dtype=torch.float64).log_softmax(0)[q.answer])
        n_q = len(self.questions)
        return {
            "accuracy": hits / n_q,
            "accuracy_norm": hits_norm / n_q,
            "accuracy_char_norm": hits_chars / n_q,
            "loss": loss / n_q,
        }

    def _token_scores(
        self, model: LoadedModel, seqs: list[list[int]], counts: list[int], pad_token: int
    ) -> list[torch.Tensor]:
        """Each choice's token log-probabilities. A question's one-token choices share one
        forward of their common context (the next-token distribution), as lm-eval groups them;
        every longer choice is scored as its own sequence."""
        sums: list[torch.Tensor] = [torch.empty(0, dtype=torch.float64)] * len(seqs)
        ctxs: list[list[int]] = []  # one context per question with one-token choices
        groups: list[list[int]] = []  # the (question, choice) indices scored from it
        rest: list[int] = []
        k = 0
        for q in self.questions:
            group = list(range(k, k + len(q.choices)))
            singles = [i for i in group if counts[i] == 1 and len(seqs[i]) > 1]
            ctx = seqs[singles[0]][:-1] if singles else []
            shared = [i for i in singles if seqs[i][:-1] == ctx]
            if len(shared) > 1:
                ctxs.append(ctx)
                groups.append(shared)
                rest.extend(i for i in group if i not in shared)
            else:
                rest.extend(group)
            k += len(q.choices)
        kw = {"batch_size": self.batch_size, "max_tokens": self.max_tokens}
        if ctxs:
            lps = next_token_logprobs(
                model,
                ctxs,
                [[seqs[i][-1] for i in g] for g in groups],
                pad_token=pad_token,
                label=self.name,
                **kw,
            )
            for g, lp in zip(groups, lps, strict=True):
                for i, v in zip(g, lp, strict=True):
                    sums[i] = torch.tensor([v], dtype=torch.float64)
        if rest:
            got = token_logprobs(
                model,
                [seqs[i] for i in rest],
                [counts[i] for i in rest],
                pad_token=pad_token,
                label=self.name,
                **kw,
            )
            for i, v in zip(rest, got, strict=True):
                sums[i] = v
        return sums


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
    metrics = ("accuracy", "accuracy_norm", "accuracy_char_norm", "loss")
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
