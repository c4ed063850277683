"""The open_clip image classifier that `sgmerge finetune` trains with a classification head: the
image tower, normalised image features, and a linear head (initialised from zero-shot text
embeddings, logit scale folded in).

On disk it is open_clip's own layout (`open_clip_model.safetensors` + `open_clip_config.json`,
still loadable by open_clip alone) with the head beside it: `classifier_head.safetensors`
(`head.weight`, [classes, dim]) and `classifier_head.json` (labels, templates). The live
classifier names the tower's tensors `clip.NAME` and the head `head.weight`; `checkpoint_name`
maps them back to the names on disk, and the head file is a *side weight file*: `LinearPath`
reads it beside each endpoint, and `interpolate_with_head` interpolates it beside the tower, so
a path point in memory equals `sgmerge interpolate`'s output at that alpha."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError

if TYPE_CHECKING:
    from mergekit_sg.io.card import CardExtras
    from mergekit_sg.io.checkpoint import Checkpoint
    from mergekit_sg.io.progress import Progress
    from mergekit_sg.merge.interpolate import InterpolateResult
    from mergekit_sg.merge.options import InterpolateOptions

HEAD_WEIGHTS = "classifier_head.safetensors"
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


def _head_dir(ck: Checkpoint) -> Path | None:
    """The checkpoint's folder when it holds a classifier head beside the weights."""
    side = ck.side_dir
    return side if side is not None and has_head(side) else None


def interpolate_with_head(
    pretrained: str | Path | Checkpoint,
    finetuned: str | Path | Checkpoint,
    out: str | Path,
    options: InterpolateOptions | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    extras: CardExtras | None = None,
    **kwargs: Any,
) -> InterpolateResult:
    """`interpolate`, and when both endpoints are open_clip classifiers, their heads too: each
    output gets `classifier_head.safetensors` interpolated by the same rules (alpha, alpha_for,
    exclude/only, dtype, compute dtype, Fisher) and the fine-tuned's `classifier_head.json`.
    Both checkpoints are opened once here and handed to `interpolate`; heads that do not fit
    fail before the (long) tower merge, and are merged inside the output's temporary folder."""
    from mergekit_sg.io.checkpoint import open_checkpoint
    from mergekit_sg.merge.interpolate import interpolate
    from mergekit_sg.merge.options import InterpolateOptions
    from mergekit_sg.options import build_options

    opts = build_options(InterpolateOptions, options, kwargs)
    run = {"progress": progress, "command": command, "extras": extras}
    pre = open_checkpoint(pretrained)
    try:
        ft = open_checkpoint(finetuned)
    except BaseException:
        pre.close()
        raise
    pre_dir, ft_dir = _head_dir(pre), _head_dir(ft)
    if pre_dir is None and ft_dir is not None and (ft_dir / "sgmerge_head.json").is_file():
        # an embedding classifier against its bare pretrained encoder (the package model):
        # the encoder interpolates, the pretrained has no head, so the fine-tuned's is kept
        warnings.warn(
            f"{pre.ref} has no classification head ({HEAD_WEIGHTS}): the encoder is "
            f"interpolated and {ft.ref}'s head is kept unchanged",
            stacklevel=2,
        )
        head_src = ft_dir / HEAD_WEIGHTS

        def copy_head(dirs: dict[float, Path]) -> None:
            for d in dirs.values():
                shutil.copyfile(head_src, d / HEAD_WEIGHTS)

        return interpolate(pre, ft, out, opts, before_commit=copy_head, **run)
    if pre_dir is None or ft_dir is None:
        if pre_dir is not None or ft_dir is not None:
            have, lack = (pre.ref, ft.ref) if pre_dir is not None else (ft.ref, pre.ref)
            warnings.warn(
                f"{have} has a classification head ({HEAD_WEIGHTS}) but {lack} has none: the "
                "head is left out and the output is a plain open_clip model",
                stacklevel=2,
            )
        return interpolate(pre, ft, out, opts, **run)
    head_opts = opts.model_copy(
        update={
            "side_files": False,
            "model_card": False,
            "open_clip_model": None,
            "push_to_hub": None,
            "private": False,
            "force": True,
        }
    )
    pre_head, ft_head = pre_dir / HEAD_WEIGHTS, ft_dir / HEAD_WEIGHTS
    try:
        _check_heads(pre_head, ft_head, head_opts)  # before the tower
    except BaseException:
        pre.close()
        ft.close()
        raise

    def add_heads(dirs: dict[float, Path]) -> None:
        """Merge the heads inside the output's temporary folder, so the output appears with
        its head or not at all."""
        scratch = next(iter(dirs.values())) / ".sgmerge-head"
        try:
            heads = interpolate(pre_head, ft_head, scratch, head_opts)
            for alpha, d in dirs.items():
                shutil.move(str(heads.outputs[alpha] / "model.safetensors"), str(d / HEAD_WEIGHTS))
                if (ft_dir / HEAD_META).is_file():
                    shutil.copyfile(ft_dir / HEAD_META, d / HEAD_META)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return interpolate(pre, ft, out, opts, before_commit=add_heads, **run)


def _check_heads(pre_head: Path, ft_head: Path, opts: InterpolateOptions) -> None:
    """Validate the two heads against the merge rules (names, shapes, dtypes), reading no data."""
    from mergekit_sg.io.checkpoint import open_checkpoint
    from mergekit_sg.merge.plan import build_plan

    with open_checkpoint(pre_head) as pre, open_checkpoint(ft_head) as ft:
        build_plan(pre, ft, opts)
