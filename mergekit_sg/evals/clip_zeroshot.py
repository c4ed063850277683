"""`clip-zeroshot`: zero-shot top-1/top-5 accuracy of a CLIP model on labelled images.

    speciality=clip-zeroshot:imagenet/val,classes=imagenet_classes.txt
    generality=clip-zeroshot:imagenet-r,classes=imagenet_classes.txt,subset=r_classes.txt
    x=clip-zeroshot:photos.csv,classes=names.txt,templates=my_templates.txt

Images: a folder with one subfolder per class (sorted), a CSV with `path,label` columns
(paths relative to the CSV; labels a class index or name), or a split in CoOp's layout
(`oxford_pets/split_zhou_OxfordPets.json:test`, `fgvc_aircraft/images_variant_test.txt`;
evals/coop_splits.py). The head's classes: `classes=FILE` (one name per line), else the folder
names or the split file's class names (label order) with `_` read as spaces. The head is built as
CLIP does: each class's prompt embeddings (the 80 OpenAI ImageNet templates, or
`templates=FILE` with `{}` for the class) normalised, averaged, renormalised; logits are the
normalised image features times the head, scaled by the model's logit scale.

`subset=FILE` maps the dataset's classes onto some of the head's (a 200-class ImageNet-A/R
folder scored against a 1000-class head): one line per dataset class in dataset order, each a
head index or name, or `DATASET_CLASS<TAB>HEAD` pairs; only those logits compete.

`clip-classifier` scores an open_clip *classifier* (a folder `sgmerge finetune --model
open_clip:ARCH` writes, with classifier_head.safetensors) with its own trained head instead of
text prompts: same data arguments, `subset=`, `limit=` and metrics (top1, top5, loss = mean
cross-entropy); the dataset's classes are matched to the head's labels by name.

    speciality=clip-classifier:pets/test       generality=clip-zeroshot:imagenet/val"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec
from mergekit_sg.evals.common import existing, inference, progress
from mergekit_sg.evals.coop_splits import read_split_spec
from mergekit_sg.evals.specs import ClipClassifierOptions, ClipImagesOptions, ClipZeroShotOptions
from mergekit_sg.evals.text import TokenCache, need_tokenizer
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.ensemble import Mix, mix_scores

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

# The 80 prompt templates of OpenAI's CLIP ImageNet zero-shot evaluation (public, from the
# CLIP repository's notebooks), in their original order.
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


@dataclass
class ImageSet:
    """Image paths and their target: an index into the evaluator's competing columns."""

    paths: list[Path]
    labels: list[Any]  # dataset label per image: a folder name, or a CSV label value
    classes: list[str]  # the dataset's classes, in dataset order (folders sorted)


def read_folder(root: Path) -> ImageSet:
    """One subfolder per class, sorted (numerically when every name is a number, as
    ImageNetV2's 0..999 class-index folders); images found recursively, sorted."""
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    numeric = bool(dirs) and all(d.name.isdigit() for d in dirs)
    dirs.sort(key=(lambda d: (int(d.name), d.name)) if numeric else (lambda d: (0, d.name)))
    paths, labels = [], []
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                paths.append(p)
                labels.append(d.name)
    if not paths:
        raise SgMergeError(f"{root}: no images in class subfolders ({', '.join(IMAGE_SUFFIXES)})")
    return ImageSet(paths, labels, [d.name for d in dirs])


def read_csv(path: Path, path_col: str, label_col: str) -> ImageSet:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or path_col not in rows[0] or label_col not in rows[0]:
        raise SgMergeError(
            f"{path}: needs columns {path_col!r} and {label_col!r} (set path=, label=)"
        )
    paths = [(path.parent / r[path_col]).resolve() for r in rows]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SgMergeError(f"{path}: image {missing[0]} does not exist ({len(missing)} missing)")
    labels = [r[label_col].strip() for r in rows]
    return ImageSet(paths, labels, list(dict.fromkeys(sorted(labels))))


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def display(name: str) -> str:
    return name.replace("_", " ")


def keyed_subset(lines: list[str], classes: list[str]) -> list[str] | None:
    """For a class-name file of `FOLDER name words` lines (CoOp's ImageNet classnames.txt)
    naming every class folder of the dataset: the subset mapping `FOLDER<TAB>line index` of the
    dataset's folders (so duplicate names such as ImageNet's two "crane"s stay apart and a
    200-class folder set competes among its own classes); else None."""
    pairs = [ln.split(None, 1) for ln in lines]
    if not pairs or not all(len(p) == 2 for p in pairs):
        return None
    index = {k: i for i, (k, _) in enumerate(pairs)}
    if len(index) != len(pairs) or not set(classes) <= set(index):
        return None
    return [f"{c}\t{index[c]}" for c in classes]


def _head_index(token: str, head: list[str], where: str) -> int:
    if token.lstrip("-").isdigit():
        i = int(token)
        if 0 <= i < len(head):
            return i
    elif token in head or display(token) in head:
        return head.index(token if token in head else display(token))
    raise SgMergeError(f"{where}: {token!r} is neither a class index < {len(head)} nor a class")


def targets(
    images: ImageSet, head: list[str], subset: list[str] | None, where: str
) -> tuple[list[int], list[int]]:
    """(columns: the head classes that compete, target per image: a position in columns)."""
    if subset is not None:
        pairs = [ln.replace(",", "\t").split("\t") for ln in subset]
        if all(len(p) == 2 for p in pairs):
            mapping = {p[0].strip(): _head_index(p[1].strip(), head, where) for p in pairs}
            order = list(mapping)
        else:
            if len(subset) != len(images.classes):
                raise SgMergeError(
                    f"{where}: {len(subset)} lines for the dataset's {len(images.classes)} classes"
                )
            order = images.classes
            mapping = {c: _head_index(t, head, where) for c, t in zip(order, subset, strict=True)}
        columns = [mapping[c] for c in order]
        if len(set(columns)) != len(columns):
            raise SgMergeError(f"{where}: two dataset classes map to the same head class")
        pos = {c: i for i, c in enumerate(order)}
        unknown = sorted({str(lbl) for lbl in images.labels} - set(pos))
        if unknown and all(str(lbl).isdigit() for lbl in images.labels):
            return columns, [int(lbl) for lbl in images.labels]  # CSV indices into the subset
        if unknown:
            raise SgMergeError(f"{where}: dataset class {unknown[0]!r} is not in the subset file")
        return columns, [pos[str(lbl)] for lbl in images.labels]
    columns = list(range(len(head)))
    by_name = all(c in head or display(c) in head for c in images.classes)
    if by_name:
        return columns, [_head_index(str(lbl), head, where) for lbl in images.labels]
    if all(str(lbl).isdigit() for lbl in images.labels):
        return columns, [_head_index(str(lbl), head, where) for lbl in images.labels]
    if len(images.classes) == len(head):  # e.g. ImageNet's wnid folders in class order
        pos = {c: i for i, c in enumerate(images.classes)}
        return columns, [pos[lbl] for lbl in images.labels]
    raise SgMergeError(
        f"{where}: the dataset's {len(images.classes)} classes do not match the head's "
        f"{len(head)} class names; map them with subset=FILE"
    )


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[Path], preprocess: Any) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.preprocess(im.convert("RGB"))


@dataclass
class ClipZeroShot(BaseEvaluator):
    paths: list[Path] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)  # head class indices that compete
    classnames: list[str] = field(default_factory=list)  # the head's classes
    templates: tuple[str, ...] = OPENAI_IMAGENET_TEMPLATES
    batch_size: int = 64
    text_batch_size: int = 256
    workers: int = 0
    cache_mb: int = 2048
    _cache: TokenCache = field(default_factory=TokenCache, repr=False)
    _pixels: TokenCache = field(default_factory=TokenCache, repr=False)

    def head(self, model: LoadedModel) -> torch.Tensor:
        """Zero-shot weights [D, len(columns)]: per class, the normalised prompt embeddings
        averaged over templates and renormalised."""
        tok = need_tokenizer(model, f"--eval {self.name}")
        names = [self.classnames[c] for c in self.columns]
        texts = [t.format(n) for n in names for t in self.templates]
        tokens = self._cache.get(tok, "head", lambda: tok(texts))
        device = model.device
        feats = []
        with inference(device), progress(f"{self.name} head", len(texts)) as advance:
            for i in range(0, len(texts), self.text_batch_size):
                chunk = tokens[i : i + self.text_batch_size].to(device)
                feats.append(F.normalize(model.module.encode_text(chunk).float(), dim=-1).cpu())
                advance(len(chunk))
        emb = torch.cat(feats).reshape(len(names), len(self.templates), -1).mean(1)
        return F.normalize(emb, dim=-1).T

    def image_features(self, model: LoadedModel) -> torch.Tensor:
        """Normalised image features [N, D]; preprocessed pixels are kept in memory between
        calls when they fit in `cache_mb` (they do not change along a path)."""
        if model.preprocess is None:
            raise SgMergeError(f"--eval {self.name}: the model has no image preprocessing")
        device = model.device
        pixels = self._pixels.get(model.preprocess, "pixels", lambda: self._load_small(model))
        feats = []
        with inference(device), progress(f"{self.name} images", len(self.paths)) as advance:
            for batch in pixels if pixels is not None else self._loader(model):
                out = model.module.encode_image(batch.to(device))
                feats.append(F.normalize(out.float(), dim=-1).cpu())
                advance(len(batch))
        return torch.cat(feats)

    def _loader(self, model: LoadedModel) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            _Images(self.paths, model.preprocess),
            batch_size=self.batch_size,
            num_workers=self.workers,
            shuffle=False,
        )

    def _load_small(self, model: LoadedModel) -> list[torch.Tensor] | None:
        first = _Images(self.paths[:1], model.preprocess)[0]
        if first.numel() * first.element_size() * len(self.paths) > self.cache_mb * 2**20:
            return None
        return list(self._loader(model))

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return topk_metrics(*self.outputs(model))

    def outputs(self, model: LoadedModel) -> tuple[torch.Tensor, list[int]]:
        """(logits [N, C] = scale * image features @ zero-shot head, class positions)."""
        if not (hasattr(model.module, "encode_image") and hasattr(model.module, "encode_text")):
            raise SgMergeError(f"--eval {self.name}: clip-zeroshot needs --model open_clip:ARCH")
        head = self.head(model)
        feats = self.image_features(model)
        scale = getattr(model.module, "logit_scale", None)
        scale = float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else 1.0
        return scale * feats @ head, self.targets

    def mixed(
        self,
        out0: tuple[torch.Tensor, list[int]],
        out1: tuple[torch.Tensor, list[int]],
        alpha: float,
        mix: Mix,
    ) -> dict[str, float]:
        """top-1/top-5/loss of the two CLIPs' mixture (probabilities, or logits, averaged)."""
        return topk_metrics(mix_scores(out0[0], out1[0], alpha, mix), out0[1])


def topk_metrics(logits: torch.Tensor, targets: list[int]) -> dict[str, float]:
    """top-1, top-5 accuracy and mean cross-entropy of [N, C] logits against class positions."""
    target = torch.tensor(targets)
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    n = len(targets)
    return {
        "top1": int((top[:, 0] == target).sum()) / n,
        "top5": int((top == target[:, None]).any(1).sum()) / n,
        "loss": F.cross_entropy(logits, target).item(),
    }


def _read_images(spec: EvalSpec, o: ClipImagesOptions) -> tuple[ImageSet, Any]:
    """The labelled images an ARG names (folder, CSV, CoOp split) and the split, if one."""
    try:
        split = read_split_spec(spec.arg)
    except SgMergeError as e:
        raise SgMergeError(f"--eval {spec.name}: {e}") from None
    if split is not None:  # labels are the split's class names, in label order
        images = ImageSet(
            split.paths, [split.classnames[y] for y in split.labels], split.classnames
        )
    elif (root := existing(spec.arg, spec)).is_dir():
        images = read_folder(root)
    else:
        images = read_csv(root, o.path, o.label)
    return images, split


def _image_fields(spec: EvalSpec, o: ClipImagesOptions, images: ImageSet) -> dict[str, Any]:
    """The fields both CLIP evaluators take the same way: name, role, primary metric, the first
    `limit` images and how to batch and cache them."""
    return {
        "name": spec.name,
        "role": spec.role,
        "primary": o.primary or "top1",
        "lower_is_better": frozenset({"loss"}),
        "paths": images.paths[: o.limit] if o.limit else images.paths,
        "batch_size": o.batch_size,
        "workers": o.workers,
        "cache_mb": o.cache_mb,
    }


def _subset(spec: EvalSpec, o: ClipImagesOptions) -> list[str] | None:
    return read_lines(existing(o.subset, spec)) if o.subset else None


def clip_zeroshot(spec: EvalSpec, o: ClipZeroShotOptions) -> ClipZeroShot:
    images, split = _read_images(spec, o)
    keyed: list[str] | None = None
    if o.classes:
        head = read_lines(existing(o.classes, spec))
        keyed = keyed_subset(head, images.classes)
        if keyed is not None:  # CoOp's `n01440764 tench` lines: names, and folders by key
            head = [ln.split(None, 1)[1].strip() for ln in head]
    elif split is not None or all(not str(c).isdigit() for c in images.classes):
        head = [display(c) for c in images.classes]
    else:
        raise SgMergeError(f"--eval {spec.name}: numeric labels need classes=FILE (class names)")
    subset = _subset(spec, o) if o.subset else keyed
    if split is not None and o.classes is None and subset is None:
        columns, target = list(range(len(head))), list(split.labels)  # the split's own head
    else:
        columns, target = targets(images, head, subset, f"--eval {spec.name}")
    templates = tuple(read_lines(existing(o.templates, spec))) if o.templates else None
    if templates is not None and not all("{}" in t for t in templates):
        raise SgMergeError(f"--eval {spec.name}: every line of {o.templates} needs {{}}")
    fields = _image_fields(spec, o, images)
    return ClipZeroShot(
        **fields,
        targets=target[: len(fields["paths"])],
        columns=columns,
        classnames=head,
        templates=templates or OPENAI_IMAGENET_TEMPLATES,
        text_batch_size=o.text_batch_size,
    )


@dataclass
class ClipClassifierEval(ClipZeroShot):
    """`clip-classifier`: an open_clip classifier scored with its own head (no text prompts):
    logits = head(normalised image features), as the model computes them. The dataset's classes
    are matched to the head's labels (classifier_head.json) by name, or mapped with subset=."""

    images: ImageSet | None = None
    subset: list[str] | None = None

    def _targets(self, labels: list[str] | None, rows: int) -> tuple[list[int], list[int]]:
        assert self.images is not None
        where = f"--eval {self.name}"
        if labels is None:  # an unlabelled head: its rows are the dataset's classes, in order
            if len(self.images.classes) != rows:
                raise SgMergeError(
                    f"{where}: the head has {rows} rows and no labels, the dataset "
                    f"{len(self.images.classes)} classes"
                )
            labels = list(self.images.classes)
        if len(labels) != rows:
            raise SgMergeError(f"{where}: {len(labels)} head labels for {rows} head rows")
        columns, target = targets(self.images, list(labels), self.subset, where)
        return columns, target[: len(self.paths)]

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return topk_metrics(*self.outputs(model))

    def outputs(self, model: LoadedModel) -> tuple[torch.Tensor, list[int]]:
        """(logits of the head's competing classes [N, C], class positions)."""
        module = model.module
        head = getattr(module, "head", None)
        if not isinstance(head, torch.nn.Linear) or not hasattr(module, "encode_image"):
            raise SgMergeError(
                f"--eval {self.name}: clip-classifier needs an open_clip classifier, a folder "
                "with classifier_head.safetensors beside the weights (as sgmerge finetune "
                "--model open_clip:ARCH writes it); score a plain CLIP with clip-zeroshot"
            )
        labels = model.extra.get("labels") or getattr(module, "labels", None)
        columns, target_list = self._targets(labels, head.out_features)
        feats = self.image_features(model)
        w = head.weight
        with inference(w.device):
            logits = head(feats.to(w.device, w.dtype)).float().cpu()
        return logits[:, columns], target_list


def clip_classifier(spec: EvalSpec, o: ClipClassifierOptions) -> ClipClassifierEval:
    images, _ = _read_images(spec, o)
    return ClipClassifierEval(
        **_image_fields(spec, o, images), images=images, subset=_subset(spec, o)
    )
