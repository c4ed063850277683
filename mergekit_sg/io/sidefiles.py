"""Files that travel with weights (config, tokenizer, preprocessor, open_clip config) copied
into a merged output, so it loads like its source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError

SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "image_processor_config.json",
    "open_clip_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "2_Normalize/config.json",
    "sgmerge_head.json",
)
_CONFIG_DTYPE = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def copy_side_files(src: Path | None, dst: Path, dtype: torch.dtype | None = None) -> list[str]:
    """Copy known side files from `src`; record a changed dtype in config.json. Returns names."""
    if src is None:
        return []
    copied: list[str] = []
    rel = "config.json"
    try:
        for rel in SIDE_FILES:
            f = src / rel
            if not f.is_file():
                continue
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            copied.append(rel)
        if dtype is not None and dtype in _CONFIG_DTYPE and (dst / "config.json").exists():
            _set_config_dtype(dst / "config.json", _CONFIG_DTYPE[dtype])
    except OSError as e:  # disk full, the source folder deleted meanwhile, ...
        raise SgMergeError(
            f"cannot copy side file {rel} from {src} into the output ({e.strerror or e})"
        ) from None
    return copied


def _set_config_dtype(path: Path, name: str) -> None:
    try:
        cfg = json.loads(path.read_text())
    except ValueError:
        return
    for key in ("torch_dtype", "dtype"):
        if key in cfg:
            cfg[key] = name
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def check_open_clip_model(architecture: str) -> dict:
    """The open_clip model config of an architecture name, or a clear error."""
    try:
        import open_clip
    except ImportError:
        raise SgMergeError(
            "--open-clip-model needs open_clip: pip install 'mergekit-sg[open_clip]'"
        ) from None
    model_cfg = open_clip.get_model_config(architecture)
    if model_cfg is None:
        raise SgMergeError(
            f"--open-clip-model {architecture!r}: not an open_clip architecture "
            "(see open_clip.list_models())"
        )
    return model_cfg


def write_open_clip_config(dst: Path, architecture: str) -> None:
    """Write `open_clip_config.json` (model and preprocess config) for an architecture."""
    model_cfg = check_open_clip_model(architecture)
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    vision = model_cfg.get("vision_cfg", {})
    preprocess = {
        "mean": list(vision.get("image_mean", OPENAI_DATASET_MEAN)),
        "std": list(vision.get("image_std", OPENAI_DATASET_STD)),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    (dst / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
