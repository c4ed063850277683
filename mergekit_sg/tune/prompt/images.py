"""Image classification data for CoOp and MERGETUNE's prompt mode: an image folder (one
subfolder per class), a CSV manifest (`path,label`) or a split of CoOp's own layout
(`split_zhou_X.json:train`, FGVC-Aircraft's `images_variant_train.txt`; evals/coop_splits.py),
class names from a file, the split file or the folder names, seeded few-shot sampling, the
base/novel split, CoOp's training augmentation (random resized crop + horizontal flip) and
seeded loaders."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.clip_zeroshot import display, read_csv, read_folder, read_lines
from mergekit_sg.evals.coop_splits import read_split_spec
from mergekit_sg.tune.prompt.fewshot import base_novel, few_shot


@dataclass
class Images:
    """Image paths with integer labels into `classnames` (the dataset's label order)."""

    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    source: str

    def take(self, idx: list[int]) -> Images:
        return Images(
            [self.paths[i] for i in idx],
            [self.labels[i] for i in idx],
            self.classnames,
            self.source,
        )

    def only(self, keep: list[int]) -> Images:
        """The images of the classes in `keep`, relabelled 0..len(keep)-1 in that order."""
        pos = {c: i for i, c in enumerate(keep)}
        idx = [i for i, y in enumerate(self.labels) if y in pos]
        return Images(
            [self.paths[i] for i in idx],
            [pos[self.labels[i]] for i in idx],
            [self.classnames[c] for c in keep],
            self.source,
        )


def read_images(data: str | Path, classnames_file: str | Path | None = None) -> Images:
    """A folder (classes = sorted subfolders), a CSV with `path,label` columns (labels are
    class indices, or names matching the class-name file), or a CoOp split
    (`DIR/split_zhou_X.json:SPLIT`, `fgvc_aircraft/images_variant_SPLIT.txt`). Names come from
    `classnames_file` (one per line, label order; ImageNet's `WNID name` lines of CoOp's
    classnames.txt are matched to the folders), else the split file or the folder/label names,
    with `_` read as spaces."""
    split = read_split_spec(data)
    if split is not None:
        names = [display(c) for c in split.classnames]
        if classnames_file:
            given = read_lines(Path(classnames_file))
            if len(given) != len(names):
                raise SgMergeError(
                    f"{data}: {len(names)} classes but {classnames_file} names {len(given)}"
                )
            names = given
        return Images(split.paths, split.labels, names, str(data))
    root = Path(data).expanduser()
    if not root.exists():
        raise SgMergeError(f"--data {data}: no such folder or file")
    found = read_folder(root) if root.is_dir() else read_csv(root, "path", "label")
    given = read_lines(Path(classnames_file)) if classnames_file else None
    if classnames_file and not given:
        raise SgMergeError(f"{classnames_file}: no class names")
    raw = [str(x) for x in found.labels]
    if all(x.isdigit() for x in raw) and not root.is_dir():
        if given is None:
            raise SgMergeError(f"{root}: numeric labels need a class-name file (--classnames)")
        labels = [int(x) for x in raw]
        if max(labels) >= len(given):
            raise SgMergeError(f"{root}: label {max(labels)} but {len(given)} class names")
        return Images(found.paths, labels, given, str(root))
    classes = found.classes
    keyed = _keyed_names(given, classes) if given else None
    if given is None:
        names = [display(c) for c in classes]
        index = {c: i for i, c in enumerate(classes)}
    elif all(c in given or display(c) in given for c in classes):
        names = given
        index = {c: given.index(c if c in given else display(c)) for c in classes}
    elif keyed is not None:  # CoOp's ImageNet classnames.txt: `n01440764 tench` per line
        names = [keyed[c] for c in classes]
        index = {c: i for i, c in enumerate(classes)}
    elif len(given) == len(classes):  # e.g. ImageNet's wnid folders with names in class order
        names = _unkeyed(given)  # ImageNetV2's 0..999 folders with CoOp's `wnid name` lines
        index = {c: i for i, c in enumerate(classes)}
    else:
        raise SgMergeError(
            f"{root}: {len(classes)} classes but {classnames_file} names {len(given)}, "
            "and the names do not match the folders"
        )
    return Images(found.paths, [index[x] for x in raw], names, str(root))


def _unkeyed(lines: list[str]) -> list[str]:
    """CoOp's `n01440764 tench` lines without their wnids (other lines as they are)."""
    pairs = [ln.split(None, 1) for ln in lines]
    if all(len(p) == 2 and re.fullmatch(r"n\d{8}", p[0]) for p in pairs):
        return [p[1].strip() for p in pairs]
    return lines


def _keyed_names(lines: list[str], classes: list[str]) -> dict[str, str] | None:
    """`FOLDER name words` lines naming every class (folder) once, as a mapping; else None.
    The classes keep the folders' order (CoOp numbers ImageNet's sorted folders the same way),
    and a subset of the folders (ImageNet-A/R's 200) takes just its own names."""
    pairs = [ln.split(None, 1) for ln in lines]
    if not all(len(p) == 2 for p in pairs):
        return None
    keyed = {k: v.strip() for k, v in pairs}
    if len(keyed) != len(pairs) or not set(classes) <= set(keyed):
        return None
    return keyed


def split_classes(images: Images, which: str) -> Images:
    """'all', or 'base' / 'novel' (the first ceil(n/2) labels, or the rest), relabelled."""
    if which == "all":
        return images
    base, novel = base_novel(images.classnames)
    return images.only(base if which == "base" else novel)


def sample_shots(images: Images, shots: int | None, seed: int) -> tuple[Images, list[int]]:
    """`shots` images per class (seeded), and the indices of the others (for validation)."""
    if shots is None:
        return images, []
    chosen = few_shot(images.labels, shots, seed)
    picked = set(chosen)
    return images.take(chosen), [i for i in range(len(images.paths)) if i not in picked]


def train_transform(preprocess: Any, augment: bool) -> Callable[[Any], torch.Tensor]:
    """CoOp's augmentation: random resized crop (scale 0.08-1, bicubic) and horizontal flip,
    then the model's normalisation; without `augment`, the model's evaluation transform."""
    if not augment:
        return preprocess
    from torchvision import transforms as T

    size, norm = _size_and_norm(preprocess)
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            _rgb,
            T.ToTensor(),
            norm,
        ]
    )


def _rgb(image: Any) -> Any:
    return image.convert("RGB")


def _size_and_norm(preprocess: Any) -> tuple[int, Any]:
    """The crop size and the Normalize step of an open_clip evaluation transform."""
    from torchvision import transforms as T

    steps = getattr(preprocess, "transforms", [])
    norm = next((t for t in steps if isinstance(t, T.Normalize)), None)
    crop = next((t for t in steps if isinstance(t, T.CenterCrop)), None)
    if norm is None or crop is None:
        raise SgMergeError("augmentation needs the model's CenterCrop + Normalize preprocessing")
    size = crop.size[0] if isinstance(crop.size, (tuple, list)) else int(crop.size)
    return size, norm


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images: Images, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.images.paths[i]) as im:
            return self.transform(im.convert("RGB")), self.images.labels[i]


def loader(
    images: Images,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
) -> torch.utils.data.DataLoader:
    """Batches of (pixels, labels); the shuffle order and the augmentation draws are seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ImageDataset(images, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=g,
        worker_init_fn=_seed_worker if workers else None,
        drop_last=False,
    )


def _seed_worker(worker_id: int) -> None:
    import random

    s = torch.initial_seed() % 2**32
    random.seed(s)
