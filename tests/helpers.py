"""Helpers several test modules share (a plain module, not a test module): stand-in fine-tunes
and embedding checks on the real MiniLM weights that need no training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mergekit_sg.io import copy_side_files, open_checkpoint

SENTENCES = [
    "The film is a triumph of craft and feeling.",
    "A dull, lifeless sequel that nobody asked for.",
    "Fine-tuning trades generality for speciality.",
]


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


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """A stand-in fine-tune: every floating parameter moved by seeded noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))
    return model


TINY_CLIP = "sg-tiny-ViT"


TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 2,
    },
}


def register_tiny_clip() -> str:
    import open_clip
    from open_clip import factory

    factory._MODEL_CONFIGS[TINY_CLIP] = json.loads(json.dumps(TINY_CLIP_CFG))
    assert open_clip.get_model_config(TINY_CLIP) is not None
    return TINY_CLIP


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `sgmerge` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "mergekit_sg", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def assert_refused(res, dest: Path, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("sgmerge: error:")
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if ".sgmerge-tmp-" in p.name]


def main_rc(*args: str) -> int:
    """`sgmerge ARGS` in this process (a subprocess would import torch again), its exit status;
    the CLI's warning hook is put back afterwards so pytest keeps capturing warnings."""
    import warnings

    from mergekit_sg.cli.app import main

    shown = warnings.showwarning
    try:
        return main(list(args))
    finally:
        warnings.showwarning = shown


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`sgmerge ARGS` in this process (fast), with its status and captured output."""
    from mergekit_sg.cli.app import main

    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), rc, out, err)


def state(path: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ck:
        return {n: ck.read(n).clone() for n in ck.tensors}


def exact(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    return (1 - alpha) * a.double() + alpha * b.double()


def within_fp32_rounding(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> None:
    """|out - exact| <= half an ulp of the output dtype + float32 working error."""
    ref = exact(a, b, alpha)
    err = (out.double() - ref).abs()
    eps_out = torch.finfo(out.dtype).eps
    tiny = torch.finfo(out.dtype).tiny
    bound = 0.5 * eps_out * ref.abs() + 4 * 2.0**-24 * (a.double().abs() + b.double().abs()) + tiny
    assert bool((err <= bound).all()), float((err - bound).max())


COLOURS = {  # head order: yellow 0, red 1, cyan 2, green 3, blue 4, magenta 5, white 6
    "yellow": (1, 1, 0),
    "red": (1, 0, 0),
    "cyan": (0, 1, 1),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
    "magenta": (1, 0, 1),
    "white": (1, 1, 1),
}


class ColourClip(torch.nn.Module):
    """Text features: the RGB of the colour a prompt names; image features: the mean RGB."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tensor(
            [list(COLOURS.values())[i] for i in tokens.tolist()], dtype=torch.float32
        )

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean((2, 3))


def colour_tokens(texts: list[str]) -> torch.Tensor:
    """The index of the colour word in each prompt (whole words: 'embroidered' is not red)."""
    words = [t.replace(".", " ").split() for t in texts]
    return torch.tensor([next(i for i, c in enumerate(COLOURS) if c in w) for w in words])


def to_tensor(image) -> torch.Tensor:
    return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255


def colour_png(path: Path, rgb: tuple[int, int, int], noise: int = 0, seed: int = 0) -> Path:
    from PIL import Image

    arr = np.full((32, 32, 3), rgb, dtype=np.int16)
    arr += np.random.default_rng(seed).integers(-noise, noise + 1, arr.shape) if noise else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path)
    return path
