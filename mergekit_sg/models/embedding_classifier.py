"""A sentence-embedding classifier: mean-pooled, L2-normalised encoder embeddings times a linear
head with a fixed scale. It is the text analogue of CLIP's zero-shot head: the head can start
as the normalised embeddings of label prompts, so the un-tuned model already classifies, and the
whole model, head included, interpolates like any checkpoint.

On disk the encoder keeps exactly its original Hugging Face layout (pooler and buffers such as
`embeddings.position_ids` included), so `AutoModel` and `SentenceTransformer` load the folder
without a warning; the head lies beside it, `head.weight` in `classifier_head.safetensors` (the
name open_clip classifiers use, so merges and linear paths carry it the same way), with the
labels and scale in `sgmerge_head.json`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

if TYPE_CHECKING:  # transformers is imported lazily: `sgmerge --help` should not pay for it
    from transformers.modeling_outputs import SequenceClassifierOutput

HEAD_FILE = "sgmerge_head.json"
HEAD_WEIGHTS = "classifier_head.safetensors"
PREFIX = "encoder."


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens the attention mask keeps, as sentence-transformers pools."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class EmbeddingClassifier(torch.nn.Module):
    """logits = scale * normalize(mean_pool(encoder(x))) @ head.weight^T"""

    def __init__(self, encoder: torch.nn.Module, labels: list[str], scale: float = 20.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        self.scale = float(scale)
        hidden = encoder.config.hidden_size
        self.head = torch.nn.Linear(hidden, len(labels), bias=False)
        self.config = encoder.config

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any
    ) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw)
        return F.normalize(mean_pool(out.last_hidden_state, attention_mask), dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kw: Any,
    ) -> SequenceClassifierOutput:
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.scale * self.head(self.embed(input_ids, attention_mask, **kw))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@torch.no_grad()
def zero_shot_head(model: EmbeddingClassifier, tokenizer: Any, prompts: list[str]) -> None:
    """Set the head rows to the normalised embeddings of one prompt per label."""
    batch = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    batch = {k: v.to(model.head.weight.device) for k, v in batch.items()}
    model.head.weight.copy_(model.embed(batch["input_ids"], batch["attention_mask"]))


def checkpoint_name(live_name: str) -> str:
    """Live parameter name -> name in the saved file (the encoder's own names)."""
    return live_name.removeprefix(PREFIX)


def save_embedding_classifier(
    model: EmbeddingClassifier, out: Path, source_dir: Path | None = None, extra: dict | None = None
) -> None:
    """Write the encoder in its original layout, the head beside it, and sgmerge_head.json into
    `out` (which exists). Tensors of the source checkpoint the live encoder does not hold as
    persistent state (e.g. `embeddings.position_ids`) are copied unchanged, so the saved key
    set equals the source's and the output interpolates with the original model."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.encoder.state_dict().items()}
    src = source_dir / "model.safetensors" if source_dir is not None else None
    if src is not None and src.is_file():
        from safetensors import safe_open

        with safe_open(str(src), "pt") as f:
            for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                if k not in state and k != "head.weight":
                    state[k] = f.get_tensor(k)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    head = {"head.weight": model.head.weight.detach().contiguous().cpu()}
    save_file(head, out / HEAD_WEIGHTS, metadata={"format": "pt"})
    model.encoder.config.save_pretrained(out)
    meta = {"labels": model.labels, "scale": model.scale, "pooling": "mean", **(extra or {})}
    (out / HEAD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if source_dir is not None:
        from mergekit_sg.io.sidefiles import SIDE_FILES

        for rel in SIDE_FILES:
            f = source_dir / rel
            if f.is_file() and rel not in ("config.json", HEAD_FILE) and not (out / rel).exists():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, out / rel)


def load_encoder(path: Path) -> torch.nn.Module:
    """The encoder exactly as the folder stores it (pooler included), without transformers'
    load report (a legacy folder may still hold head.weight in model.safetensors) and without
    its `Loading weights` bar (noise in logs; our own progress says what is happening)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # as models/adapters.py does for every hf load
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModel.from_pretrained(path)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_embedding_classifier(path: Path) -> EmbeddingClassifier:
    """Rebuild the classifier from a directory written by `save_embedding_classifier` (or by
    an older version that kept head.weight inside model.safetensors)."""
    from mergekit_sg.io.checkpoint import open_checkpoint

    meta = json.loads((path / HEAD_FILE).read_text())
    model = EmbeddingClassifier(load_encoder(path), meta["labels"], meta["scale"])
    head_file = path / HEAD_WEIGHTS if (path / HEAD_WEIGHTS).is_file() else path
    with open_checkpoint(head_file) as ck:
        model.head.weight.data.copy_(ck.read("head.weight"))
    return model
