"""Checkpoint references: lazy opening, wrapper prefixes, legacy pickles, Hub ids from the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mergekit_sg import SgMergeError, interpolate, open_checkpoint
from mergekit_sg.io import resolve


def test_open_reads_headers_only(tmp_path: Path) -> None:
    """Names, shapes and dtypes come from the header: corrupt data does not stop opening."""
    f = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(256, 256), "b": torch.zeros(3, dtype=torch.int64)}, f)
    raw = bytearray(f.read_bytes())
    raw[-1000:] = b"\xff" * 1000  # clobber tensor data, keep the size
    f.write_bytes(bytes(raw))
    with open_checkpoint(f) as ck:
        assert ck.tensors["w"].shape == (256, 256) and ck.tensors["b"].dtype == torch.int64
        assert ck.num_params == 65539
        assert torch.equal(ck.read_flat("w", 0, 10), torch.ones(10))


def test_module_prefix_is_normalised_against_plain_keys(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.pt"
    save_file({"x.weight": torch.zeros(4)}, a)
    torch.save({"state_dict": {"module.x.weight": torch.ones(4)}}, b)
    res = interpolate(a, b, tmp_path / "o", alpha=0.25)
    with open_checkpoint(res.out) as ck:
        assert torch.equal(ck.read("x.weight"), torch.full((4,), 0.25))


def test_legacy_non_zip_pickle(tmp_path: Path) -> None:
    f = tmp_path / "old.pth"
    torch.save({"w": torch.arange(6.0)}, f, _use_new_zipfile_serialization=False)
    with open_checkpoint(f) as ck:
        assert torch.equal(ck.read("w"), torch.arange(6.0))


def _fake_hub_cache(cache: Path, repo: str, src: Path, commit: str) -> None:
    """The layout huggingface_hub's cache uses: refs/<rev> -> snapshots/<commit>/files."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    shutil.copytree(src, snap)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    (base / "refs" / "v2").write_text(commit)


def test_hub_id_from_offline_cache(llama_pair, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "org/pre", llama_pair["pre_f32"], "a" * 40)
    _fake_hub_cache(cache, "org/ft", llama_pair["ft_f32"], "b" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    r = resolve("org/ft@v2")
    assert r.hub_id == "org/ft" and r.revision == "v2" and r.commit == "b" * 40
    res = interpolate("org/pre", "org/ft@v2", tmp_path / "o", alpha=0.5)
    card = (res.out / "README.md").read_text()
    assert "base_model:\n- org/pre\n- org/ft" in card and "base_model_relation: merge" in card
    with pytest.raises(SgMergeError, match="not in the local Hub cache"):
        resolve("org/missing")


def test_directory_without_weights(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SgMergeError, match="no weights found"):
        open_checkpoint(tmp_path / "empty")
