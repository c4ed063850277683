"""`inspect` and `diff`: what is reported is what is in the files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from helpers import run_cli
from safetensors.torch import save_file

from mergekit_sg import diff_checkpoints, inspect_checkpoint
from mergekit_sg.merge import InterpolateOptions, group_of


def test_inspect_counts_and_files(llama_pair) -> None:
    s = inspect_checkpoint(llama_pair["pre_sharded"])
    assert s.format == "safetensors-sharded" and s.kind == "transformers"
    assert len(s.files) > 1
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(llama_pair["pre_sharded"])
    assert s.num_params == sum(t.numel() for t in m.state_dict().values())
    assert s.nbytes == 4 * s.num_params


def test_inspect_groups_shows_rules(llama_pair) -> None:
    opts = InterpolateOptions(alpha=[0.5], alpha_for=["*.mlp.*=0.2"], exclude=["lm_head.*"])
    rules = {r.name: r.rule for r in inspect_checkpoint(llama_pair["pre_f32"], opts).tensors}
    assert rules["lm_head.weight"].startswith("copy from finetuned (--exclude 'lm_head.*')")
    assert rules["model.layers.0.mlp.up_proj.weight"] == "alpha=0.2 (--alpha-for '*.mlp.*')"
    assert rules["model.norm.weight"] == "alpha=0.5 (default alpha)"


def test_inspect_cli_json_and_table(llama_pair) -> None:
    res = run_cli("inspect", str(llama_pair["pre_tied_bin"]), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["format"] == "pytorch"
    tied = [t for t in data["tensors"] if t["tied_to"]]
    assert tied == [{**tied[0], "name": "lm_head.weight", "tied_to": "model.embed_tokens.weight"}]
    res = run_cli("inspect", str(llama_pair["pre_f32"]), "--groups", "--exclude", "lm_head.*")
    assert res.returncode == 0 and "copy from finetuned" in res.stdout


def test_diff_distances_are_exact(tmp_path: Path) -> None:
    a = {
        "enc.layer.0.w": torch.tensor([3.0, 4.0]),
        "enc.layer.1.w": torch.tensor([1.0, 0.0]),
        "head.w": torch.tensor([2.0]),
        "only_a": torch.zeros(1),
        "s": torch.zeros(2),
    }
    b = {
        "enc.layer.0.w": torch.tensor([3.0, 5.0]),
        "enc.layer.1.w": torch.tensor([1.0, 0.0]),
        "head.w": torch.tensor([4.0]),
        "only_b": torch.zeros(1),
        "s": torch.zeros(3),
    }
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    rep = diff_checkpoints(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert rep.only_a == ["only_a"] and rep.only_b == ["only_b"]
    assert rep.shape_mismatch == [("s", (2,), (3,))]
    g = {x.group: x for x in rep.groups}
    assert math.isclose(g["enc.layer.0"].rel_l2, 0.2) and g["enc.layer.1"].rel_l2 == 0.0
    assert math.isclose(g["head"].rel_l2, 1.0)
    assert math.isclose(rep.total_rel_l2, math.sqrt(5 / 30))
    res = run_cli("diff", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    assert res.returncode == 0 and "only_b" in res.stdout and "shape mismatch" in res.stdout


def test_group_of() -> None:
    assert group_of("model.layers.12.mlp.up_proj.weight", "layer") == "model.layers.12"
    assert group_of("visual.transformer.resblocks.3.attn.in_proj_weight", "layer") == (
        "visual.transformer.resblocks.3"
    )
    assert group_of("logit_scale", "layer") == "logit_scale"
    assert group_of("model.norm.weight", "module") == "model.norm"
