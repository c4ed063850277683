"""Tiny real models built in fixtures: a Llama-style causal LM, a BERT-like encoder and an
open_clip CLIP, each as a pretrained/fine-tuned pair saved the ways users save them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import perturb, register_tiny_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGEKIT_SG_CACHE", str(tmp_path_factory.getbasetemp() / "sgcache"))


def _llama(dtype: torch.dtype, tie: bool, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(cfg).to(dtype)
    return perturb(model, seed) if seed else model


def save_pickle_dir(model: torch.nn.Module, path: Path, shards: int = 1) -> Path:
    """pytorch_model.bin (or sharded with its index) + config, as older transformers saved."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    sd = model.state_dict()
    if shards == 1:
        torch.save(sd, path / "pytorch_model.bin")
        return path
    names = list(sd)
    weight_map = {}
    for i in range(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {n: sd[n] for n in names[i::shards]}
        torch.save(part, path / fname)
        weight_map.update({n: fname for n in part})
    (path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return path


@pytest.fixture(scope="session")
def llama_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pretrained/fine-tuned tiny Llama saved as safetensors (single and sharded) and .bin."""
    root = tmp_path_factory.mktemp("llama")
    out: dict[str, Path] = {}
    for role, seed in (("pre", 0), ("ft", 1)):
        for dtype, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            m = _llama(dtype, tie=False, seed=seed)
            m.save_pretrained(root / f"{role}_{tag}")
            out[f"{role}_{tag}"] = root / f"{role}_{tag}"
        m = _llama(torch.float32, tie=False, seed=seed)
        m.save_pretrained(root / f"{role}_sharded", max_shard_size="20KB")
        out[f"{role}_sharded"] = root / f"{role}_sharded"
        save_pickle_dir(m, root / f"{role}_bin")
        out[f"{role}_bin"] = root / f"{role}_bin"
        save_pickle_dir(m, root / f"{role}_bin_sharded", shards=3)
        out[f"{role}_bin_sharded"] = root / f"{role}_bin_sharded"
        tied = _llama(torch.float32, tie=True, seed=seed)
        save_pickle_dir(tied, root / f"{role}_tied_bin")
        out[f"{role}_tied_bin"] = root / f"{role}_tied_bin"
    return out


@pytest.fixture(scope="session")
def bert_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT-like encoder pair (with its integer position_ids buffer)."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("bert")
    cfg = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    out = {}
    for role, seed in (("pre", 0), ("ft", 2)):
        torch.manual_seed(0)
        m = BertModel(cfg)
        if seed:
            perturb(m, seed)
        m.save_pretrained(root / role)
        out[role] = root / role
    return out


@pytest.fixture(scope="session")
def clip_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny open_clip CLIP (real architecture code, random init), saved as open_clip's
    trainer saves: torch.save({'epoch', 'state_dict' with DataParallel 'module.' keys, ...})."""
    import open_clip

    name = register_tiny_clip()
    root = tmp_path_factory.mktemp("clip")
    out = {}
    for role, seed in (("pre", 0), ("ft", 3)):
        torch.manual_seed(0)
        model = open_clip.create_model(name)
        if seed:
            perturb(model, seed, scale=0.02)
        sd = {f"module.{k}": v for k, v in model.state_dict().items()}
        opt = torch.optim.AdamW(model.parameters())
        torch.save(
            {"epoch": 10, "name": "run", "state_dict": sd, "optimizer": opt.state_dict()},
            root / f"{role}.pt",
        )
        out[role] = root / f"{role}.pt"
    return out
