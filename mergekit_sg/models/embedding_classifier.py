"""A sentence-embedding classifier: mean-pooled, L2-normalised encoder embeddings times a linear
head with a fixed scale. It is the text analogue of CLIP's zero-shot head: the head can start
as the normalised embeddings of label prompts, so the un-tuned model already classifies, and the
whole model, head included, interpolates like any checkpoint.

On disk it is the encoder's own Hugging Face layout (so `AutoModel.from_pretrained` still loads
the encoder) plus `head.weight` in the same safetensors and `sgmerge_head.json`."""

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
    """Write the encoder layout + head.weight + sgmerge_head.json into `out` (which exists)."""
    state = {
        checkpoint_name(k): v.detach().contiguous().cpu() for k, v in model.state_dict().items()
    }
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    model.encoder.config.save_pretrained(out)
    meta = {"labels": model.labels, "scale": model.scale, "pooling": "mean", **(extra or {})}
    (out / HEAD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if source_dir is not None:
        from mergekit_sg.io.sidefiles import SIDE_FILES

        for rel in SIDE_FILES:
            f = source_dir / rel
            if f.is_file() and rel != "config.json" and not (out / rel).exists():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, out / rel)


def load_embedding_classifier(path: Path) -> EmbeddingClassifier:
    """Rebuild the classifier from a directory written by `save_embedding_classifier`."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    meta = json.loads((path / HEAD_FILE).read_text())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head tensor is "unexpected" for the bare encoder
    try:
        encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
    except TypeError:
        encoder = AutoModel.from_pretrained(path)
    finally:
        hf_logging.set_verbosity(verbosity)
    model = EmbeddingClassifier(encoder, meta["labels"], meta["scale"])
    from mergekit_sg.io.checkpoint import open_checkpoint

    with open_checkpoint(path) as ck:
        model.head.weight.data.copy_(ck.read("head.weight"))
    return model
