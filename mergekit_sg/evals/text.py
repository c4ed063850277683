"""Text helpers shared by the evaluators: length-bucketed batches, padding, tokenisation cached
across alphas (a scan calls an evaluator many times with the same tokenizer), and the
sentence-embedding path (mean pooling over the attention mask, L2-normalised, as
sentence-transformers does; open_clip's text tower for CLIP models)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.common import inference, progress
from mergekit_sg.models.adapters import LoadedModel

T = TypeVar("T")


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped longest first into batches of similar length, so padding stays small
    (and a batch too big for memory fails first). A batch holds at most `batch_size` items
    and, with `max_tokens`, at most that many padded tokens. Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for i in order:
        if cur and (
            len(cur) >= batch_size
            or (max_tokens is not None and max(width, lengths[i]) * (len(cur) + 1) > max_tokens)
        ):
            batches.append(cur)
            cur, width = [], 0
        cur.append(i)
        width = max(width, lengths[i])
    if cur:
        batches.append(cur)
    return batches


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the attention mask (1 on real tokens)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids, mask


def pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


class TokenCache:
    """Results computed for one tokenizer (or preprocess) object, reused while it stays the
    same object: a scan moves the weights, not the tokenizer, so texts are tokenised once."""

    def __init__(self) -> None:
        self._owner: object = None
        self._store: dict[Hashable, Any] = {}

    def get(self, owner: object, key: Hashable, compute: Callable[[], T]) -> T:
        if owner is not self._owner:
            self._owner, self._store = owner, {}
        if key not in self._store:
            self._store[key] = compute()
        return self._store[key]


def need_tokenizer(model: LoadedModel, who: str) -> Any:
    if model.tokenizer is None:
        raise SgMergeError(
            f"{who}: {model.path} has no tokenizer files (tokenizer.json or vocab.txt); "
            "save the tokenizer next to the weights"
        )
    return model.tokenizer


def hf_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids with the tokenizer's special tokens, truncated to `max_length`."""
    out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    return [list(ids) for ids in out["input_ids"]]


def encoder_module(model: LoadedModel, who: str) -> torch.nn.Module:
    """The bare transformer under a task head (`base_model`: BertModel under
    BertForSequenceClassification; an embedding classifier's `encoder`), or the model itself."""
    module = model.module
    if model.kind == "hf:encoder":
        return module
    from transformers import PreTrainedModel

    for attr in ("base_model", "encoder"):  # hf task models; an embedding classifier's encoder
        sub = getattr(module, attr, None)
        if isinstance(sub, PreTrainedModel):
            return sub
    raise SgMergeError(
        f"{who}: cannot find a text encoder in {model.spec} ({type(module).__name__}); use an "
        "hf model or open_clip, or give a python model a `base_model` (its hf encoder)"
    )


def is_clip(model: LoadedModel) -> bool:
    return model.kind == "open_clip" or hasattr(model.module, "encode_text")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real tokens (sentence-transformers' pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def embed_texts(
    model: LoadedModel,
    texts: Sequence[str],
    cache: TokenCache,
    *,
    batch_size: int = 64,
    max_length: int = 256,
    label: str = "embedding",
) -> torch.Tensor:
    """L2-normalised embeddings [N, D] (float32, CPU) of `texts`: open_clip's `encode_text`, or
    the hf encoder's last hidden state mean-pooled over the attention mask."""
    tok = need_tokenizer(model, label)
    device = model.device
    out: list[torch.Tensor | None] = [None] * len(texts)
    if is_clip(model):
        tokens = cache.get(tok, ("clip", tuple(texts)), lambda: tok(list(texts)))
        batches = [
            list(range(i, min(i + batch_size, len(texts))))
            for i in range(0, len(texts), batch_size)
        ]
        with inference(device), progress(label, len(texts)) as advance:
            for b in batches:
                feats = model.module.encode_text(tokens[b].to(device))
                feats = F.normalize(feats.float(), dim=-1).cpu()
                for j, i in enumerate(b):
                    out[i] = feats[j]
                advance(len(b))
        return torch.stack(out)  # type: ignore[arg-type]
    encoder = encoder_module(model, label)
    ids = cache.get(tok, ("hf", tuple(texts), max_length), lambda: hf_ids(tok, texts, max_length))
    with inference(device), progress(label, len(texts)) as advance:
        for b in length_batches([len(s) for s in ids], batch_size):
            input_ids, mask = pad([ids[i] for i in b], pad_id(tok))
            input_ids, mask = input_ids.to(device), mask.to(device)
            hidden = encoder(input_ids=input_ids, attention_mask=mask)[0]
            feats = F.normalize(mean_pool(hidden.float(), mask), dim=-1).cpu()
            for j, i in enumerate(b):
                out[i] = feats[j]
            advance(len(b))
    return torch.stack(out)  # type: ignore[arg-type]
