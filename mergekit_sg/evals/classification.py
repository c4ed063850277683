"""`seq-classification`: accuracy, macro-F1, mean cross-entropy (and ROC AUC for binary tasks,
when asked) of a sequence classifier on a CSV/TSV/JSONL file or a built-in dataset.

    speciality=seq-classification:test.csv,text=review,label=fresh,labels=rotten+fresh
    speciality=seq-classification:rotten-tomatoes-test
    ood=seq-classification:amazon-fine-food-test,primary=auc

Labels are class indices, or names mapped by `labels=NAME0+NAME1+...` (else by the model's
config.label2id). Built-in sets: rotten-tomatoes-{train,test} (label names rotten, fresh) and
amazon-fine-food-{train,test} (other, great; AUC on by default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec
from mergekit_sg.evals.common import (
    check_primary,
    column,
    existing,
    inference,
    progress,
    read_rows,
)
from mergekit_sg.evals.datasets import CLASSIFICATION, classification_set
from mergekit_sg.evals.specs import SeqClassificationOptions
from mergekit_sg.evals.stats import macro_f1, roc_auc
from mergekit_sg.evals.text import TokenCache, hf_ids, length_batches, need_tokenizer, pad, pad_id
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.ensemble import Mix, mix_scores

KINDS = ("hf:seq-classification", "hf:embedding-classifier", "python")


@dataclass
class SeqClassification(BaseEvaluator):
    """Classifier metrics on fixed texts; tokenisation is done once per tokenizer."""

    texts: list[str] = field(default_factory=list)
    raw_labels: list[Any] = field(default_factory=list)
    label_names: tuple[str, ...] | None = None  # a built-in set's names, in index order
    user_names: tuple[str, ...] | None = None  # labels=NAME0+NAME1+...
    source: str = ""
    auc: bool = False
    max_length: int = 128
    batch_size: int = 32
    _cache: TokenCache = field(default_factory=TokenCache, repr=False)

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return self.scores(*self.outputs(model))

    def outputs(self, model: LoadedModel) -> tuple[torch.Tensor, list[int]]:
        """(logits [N, C], class indices): what one forward pass over the texts gives."""
        if model.kind not in KINDS:
            raise SgMergeError(
                f"--eval {self.name}: seq-classification needs --model hf:seq-classification, "
                f"not {model.kind}"
            )
        labels = self._labels(model)
        return self.logits(model), labels

    def mixed(
        self,
        out0: tuple[torch.Tensor, list[int]],
        out1: tuple[torch.Tensor, list[int]],
        alpha: float,
        mix: Mix,
    ) -> dict[str, float]:
        """The metrics of the two classifiers' mixture: probabilities (or logits) averaged."""
        return self.scores(mix_scores(out0[0], out1[0], alpha, mix), out0[1])

    def scores(self, logits: torch.Tensor, labels: list[int]) -> dict[str, float]:
        """accuracy, macro-F1, cross-entropy (and AUC) of logits [N, C] against labels."""
        if logits.shape[1] == 1:
            preds = (logits[:, 0] > 0).long().tolist()
            target = torch.tensor(labels, dtype=torch.float32)
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], target).item()
            scores = logits[:, 0].tolist()
        else:
            if max(labels) >= logits.shape[1]:
                raise SgMergeError(
                    f"--eval {self.name}: label index {max(labels)} but the model has "
                    f"{logits.shape[1]} outputs; map the labels with labels=NAME0+NAME1+..."
                )
            preds = logits.argmax(-1).tolist()
            loss = F.cross_entropy(logits, torch.tensor(labels)).item()
            scores = (logits[:, 1] - logits[:, 0]).tolist() if logits.shape[1] == 2 else []
        out = {
            "accuracy": sum(p == t for p, t in zip(preds, labels, strict=True)) / len(labels),
            "macro_f1": macro_f1(preds, labels),
            "loss": loss,
        }
        if self.auc:
            if not scores or set(labels) - {0, 1}:
                raise SgMergeError(f"--eval {self.name}: auc needs a binary task (labels 0/1)")
            out["auc"] = roc_auc(scores, labels)
        return out

    def logits(self, model: LoadedModel) -> torch.Tensor:
        """float32 logits [N, C] on the CPU, in the order of `texts`."""
        tok = need_tokenizer(model, f"--eval {self.name}")
        ids = self._cache.get(
            tok, self.max_length, lambda: hf_ids(tok, self.texts, self.max_length)
        )
        rows: list[torch.Tensor | None] = [None] * len(ids)
        device = model.device
        with inference(device), progress(self.name, len(ids)) as advance:
            for b in length_batches([len(s) for s in ids], self.batch_size):
                input_ids, mask = pad([ids[i] for i in b], pad_id(tok))
                out = model.module(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                logits = _logits(out).float().cpu()
                for j, i in enumerate(b):
                    rows[i] = logits[j]
                advance(len(b))
        return torch.stack(rows)  # type: ignore[arg-type]

    def _labels(self, model: LoadedModel) -> list[int]:
        """Class indices: by the user's `labels=` order, else as given when numeric, else by
        the model's own label names (an embedding classifier's `labels`, a config's id2label),
        else by the built-in set's order."""
        if self.user_names is not None:
            return self._by_names(self.user_names, "labels=" + "+".join(self.user_names))
        ints = [_as_int(v) for v in self.raw_labels]
        if all(i is not None for i in ints):
            return ints  # type: ignore[return-value]
        names = model_label_names(model)
        values = {str(v).lower() for v in self.raw_labels}
        if names and values <= {n.lower() for n in names}:
            return self._by_names(tuple(n.lower() for n in names), "", lower=True)
        if self.label_names is not None:
            return self._by_names(self.label_names, "labels=" + "+".join(self.label_names))
        missing = sorted(values - {n.lower() for n in names})
        raise SgMergeError(
            f"--eval {self.name}: {self.source}: label {missing[0]!r} is neither a class index "
            "nor a label of the model; map names with labels=NAME0+NAME1+..."
        )

    def _by_names(self, names: tuple[str, ...], what: str, lower: bool = False) -> list[int]:
        index = {n: i for i, n in enumerate(names)}
        try:
            return [index[str(v).lower() if lower else str(v)] for v in self.raw_labels]
        except KeyError as e:
            raise SgMergeError(
                f"--eval {self.name}: {self.source}: label {e.args[0]!r} is not in {what}"
            ) from None


def model_label_names(model: LoadedModel) -> list[str]:
    """The label names a classifier carries, in index order ([] when it has only defaults)."""
    labels = getattr(model.module, "labels", None)
    if isinstance(labels, (list, tuple)) and all(isinstance(n, str) for n in labels):
        return list(labels)
    id2label = getattr(getattr(model.module, "config", None), "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)]
    if names == [f"LABEL_{i}" for i in range(len(names))]:
        return []
    return names


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise SgMergeError("seq-classification: the model returned no logits")
    return logits


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


def seq_classification(spec: EvalSpec, o: SeqClassificationOptions) -> SeqClassification:
    names = tuple(n.strip() for n in o.labels.split("+")) if o.labels else None
    if spec.arg in CLASSIFICATION:
        examples, builtin = classification_set(spec.arg, seed=o.seed)
        texts = [e.text for e in examples]
        builtin_names: tuple[str, ...] | None = builtin
        raw: list[Any] = [builtin[e.label] for e in examples]
        if names is not None and sorted(names) != sorted(builtin):
            raise SgMergeError(
                f"--eval {spec.name}: labels= must order {'+'.join(builtin)} for {spec.arg}"
            )
        source, auc_default = spec.arg, spec.arg.startswith("amazon")
    else:
        path = existing(spec.arg, spec)
        rows = read_rows(path)
        if not rows:
            raise SgMergeError(f"--eval {spec.name}: {path} has no rows")
        texts = [str(t) for t in column(rows, o.text, path)]
        raw = column(rows, o.label, path)
        builtin_names = None
        source, auc_default = str(path), False
    if o.limit is not None:
        texts, raw = texts[: o.limit], raw[: o.limit]
    primary = o.primary or "accuracy"
    auc = (auc_default if o.auc is None else o.auc) or primary == "auc"
    metrics = ("accuracy", "macro_f1", "loss", *(("auc",) if auc else ()))
    ev = SeqClassification(
        spec.name,
        spec.role,
        check_primary(spec, primary, metrics),
        frozenset({"loss"}),
        texts=texts,
        raw_labels=raw,
        label_names=builtin_names,
        user_names=names,
        source=source,
        auc=auc,
        max_length=o.max_length,
        batch_size=o.batch_size,
    )
    if not texts:
        raise SgMergeError(f"--eval {spec.name}: no examples in {source}")
    return ev
