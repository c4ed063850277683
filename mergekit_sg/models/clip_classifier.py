"""The open_clip image classifier that `sgmerge finetune` trains with a classification head: the
image tower, normalised image features, and a linear head (initialised from zero-shot text
embeddings, logit scale folded in).

On disk it is open_clip's own layout (`open_clip_model.safetensors` + `open_clip_config.json`,
still loadable by open_clip alone) with the head beside it: `classifier_head.safetensors`
(`head.weight`, [classes, dim]) and `classifier_head.json` (labels, templates). The live
classifier names the tower's tensors `clip.NAME` and the head `head.weight`; `checkpoint_name`
maps them back to the names on disk, and the head file is a *side weight file*: `LinearPath`
reads it beside each endpoint, and `interpolate` (which opens checkpoints with their side
weight files) merges it with the tower in one pass, so a path point in memory equals
`sgmerge interpolate`'s output at that alpha."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError

if TYPE_CHECKING:
    from mergekit_sg.merge.interpolate import InterpolateResult

HEAD_WEIGHTS = "classifier_head.safetensors"  # a side weight file: io/checkpoint.py
HEAD_META = "classifier_head.json"
PREFIX = "clip."


class ClipClassifier(torch.nn.Module):
    """logits = head(normalize(clip.encode_image(images)))

    `encode_image`, `encode_text` and `logit_scale` are the wrapped CLIP's, so text zero-shot
    evaluation (`clip-zeroshot`) still works on a classifier."""

    def __init__(self, clip: Any, head: torch.Tensor, labels: list[str] | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.labels = list(labels) if labels is not None else None
        self.head = torch.nn.Linear(head.shape[1], head.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(head)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(images).float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def encode_image(self, images: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        return self.clip.encode_image(images, *args, **kw)

    def encode_text(self, text: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        return self.clip.encode_text(text, *args, **kw)

    @property
    def logit_scale(self) -> Any:
        return getattr(self.clip, "logit_scale", None)


def checkpoint_name(live_name: str) -> str:
    """Live name -> name on disk: `clip.X` is the tower's `X`, `head.weight` the head file's."""
    return live_name.removeprefix(PREFIX)


def has_head(path: Path) -> bool:
    return path.is_dir() and (path / HEAD_WEIGHTS).is_file()


def read_head(path: Path) -> tuple[torch.Tensor, list[str] | None]:
    """The head weight and its labels (None when classifier_head.json does not list them)."""
    from mergekit_sg.io.checkpoint import open_checkpoint

    with open_checkpoint(path / HEAD_WEIGHTS) as ck:
        if "head.weight" not in ck.tensors:
            raise SgMergeError(f"{path / HEAD_WEIGHTS}: no head.weight tensor")
        head = ck.read("head.weight")
    labels = None
    if (path / HEAD_META).is_file():
        labels = json.loads((path / HEAD_META).read_text()).get("labels")
    if labels is not None and len(labels) != head.shape[0]:
        raise SgMergeError(
            f"{path}: {HEAD_META} lists {len(labels)} labels for a head of {head.shape[0]} rows"
        )
    return head, labels


# `interpolate` merges the head itself now (the head file is a side weight file of the
# checkpoint, merged in the same pass); this name stays until workflows.py is replaced.
def interpolate_with_head(*args: Any, **kwargs: Any) -> InterpolateResult:
    """Deprecated alias of `mergekit_sg.merge.interpolate.interpolate`."""
    from mergekit_sg.merge.interpolate import interpolate

    return interpolate(*args, **kwargs)
