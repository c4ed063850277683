"""open_clip checkpoints (as its trainer saves them) merge into files open_clip's own loaders read,
and the loaded model computes with the interpolated weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import register_tiny_clip

from mergekit_sg import interpolate, open_checkpoint

open_clip = pytest.importorskip("open_clip")


def raw_state(pt: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(pt, weights_only=True)["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def test_reads_nested_state_dict_with_module_prefix(clip_pair) -> None:
    with open_checkpoint(clip_pair["pre"]) as ck:
        assert ck.kind == "open_clip"
        assert "logit_scale" in ck.tensors and not any(n.startswith("module.") for n in ck.tensors)
        assert "optimizer" not in " ".join(ck.tensors)


def test_merged_clip_loads_with_open_clip_and_computes(clip_pair, tmp_path: Path) -> None:
    name = register_tiny_clip()
    alpha = 0.35
    res = interpolate(
        clip_pair["pre"],
        clip_pair["ft"],
        tmp_path / "m",
        alpha=alpha,
        open_clip_model=name,
        exclude=["logit_scale"],
    )
    weights = res.out / "open_clip_model.safetensors"
    assert weights.exists()
    cfg = json.loads((res.out / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["embed_dim"] == 32

    a, b = raw_state(clip_pair["pre"]), raw_state(clip_pair["ft"])
    ref = open_clip.create_model(name).eval()
    with torch.no_grad():
        sd = {k: b[k] if k == "logit_scale" else (1 - alpha) * a[k] + alpha * b[k] for k in a}
        ref.load_state_dict(sd)

    by_file = open_clip.create_model(name, pretrained=str(weights)).eval()
    by_dir = open_clip.create_model(f"local-dir:{res.out}").eval()
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = torch.randint(0, 49408, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = (ref.encode_image(image), ref.encode_text(text))
        for m in (by_file, by_dir):
            torch.testing.assert_close(m.encode_image(image), want[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(m.encode_text(text), want[1], rtol=1e-5, atol=1e-5)
            assert torch.equal(m.logit_scale, b["logit_scale"])


def test_alpha_for_visual_tower(clip_pair, tmp_path: Path) -> None:
    res = interpolate(
        clip_pair["pre"], clip_pair["ft"], tmp_path / "m", alpha=0.5, alpha_for=["visual.*=0.3"]
    )
    a, b = raw_state(clip_pair["pre"]), raw_state(clip_pair["ft"])
    with open_checkpoint(res.out) as ck:
        v = "visual.conv1.weight"
        torch.testing.assert_close(ck.read(v), 0.7 * a[v] + 0.3 * b[v], rtol=0, atol=1e-6)
        t = "token_embedding.weight"
        torch.testing.assert_close(ck.read(t), 0.5 * a[t] + 0.5 * b[t], rtol=0, atol=1e-6)


def test_open_clip_config_side_file_is_carried(clip_pair, tmp_path: Path) -> None:
    """A Hub-style open_clip directory keeps its config next to the merged weights."""
    register_tiny_clip()
    src = tmp_path / "ftdir"
    src.mkdir()
    with open_checkpoint(clip_pair["ft"]) as ck:
        from safetensors.torch import save_file

        save_file(
            {n: ck.read(n).contiguous() for n in ck.tensors}, src / "open_clip_model.safetensors"
        )
    from helpers import TINY_CLIP_CFG

    (src / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    res = interpolate(clip_pair["pre"], src, tmp_path / "m", alpha=0.5)
    assert (res.out / "open_clip_config.json").exists()
    open_clip.create_model(f"local-dir:{res.out}")
    shutil.rmtree(src)
