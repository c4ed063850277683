"""Synthetic Llama-style checkpoint pairs for the benchmarks: a random-init "pretrained" model
and a "fine-tuned" one (the same plus a small seeded perturbation), saved sharded in bfloat16
with `save_pretrained`. Deterministic for a given size and seed."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

# TinyLlama-1.1B's shape; "3.3b" keeps every layer's shape and triples the parameter count
# by stacking more layers (embeddings and head unchanged).
BASE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
LAYERS = {"1.1b": 22, "3.3b": 72, "tiny": 2}
SHARD = "1GB"
FT_NOISE = 2e-3  # standard deviation of the fine-tuning delta (init std is 0.02)


@dataclass(frozen=True)
class Pair:
    size: str
    pre: Path
    ft: Path

    @property
    def input_files(self) -> list[Path]:
        return sorted(self.pre.glob("*.safetensors")) + sorted(self.ft.glob("*.safetensors"))


def _config(size: str):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    if size == "tiny":
        return LlamaConfig(
            **{
                **BASE,
                "hidden_size": 256,
                "intermediate_size": 704,
                "num_attention_heads": 8,
                "num_key_value_heads": 2,
                "vocab_size": 4000,
                "num_hidden_layers": 2,
            }
        )
    return LlamaConfig(**BASE, num_hidden_layers=LAYERS[size])


def _stamp(size: str, seed: int) -> str:
    return json.dumps(
        {
            "size": size,
            "seed": seed,
            "base": BASE,
            "layers": LAYERS.get(size),
            "noise": FT_NOISE,
            "shard": SHARD,
        },
        sort_keys=True,
    )


def build_pair(root: Path, size: str, seed: int = 0) -> Pair:
    """Build (or reuse, when already built with the same recipe) the pair for `size`."""
    import torch
    from transformers import LlamaForCausalLM

    d = root / f"llama-{size}"
    pair = Pair(size, d / "pre", d / "ft")
    stamp = d / "recipe.json"
    if stamp.exists() and stamp.read_text() == _stamp(size, seed):
        return pair
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = LlamaForCausalLM(_config(size))
    finally:
        torch.set_default_dtype(old)
    model = model.to(torch.bfloat16)
    model.save_pretrained(pair.pre, max_shard_size=SHARD)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(FT_NOISE))
    model.save_pretrained(pair.ft, max_shard_size=SHARD)
    del model
    stamp.write_text(_stamp(size, seed))
    return pair
