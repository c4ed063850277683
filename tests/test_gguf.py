"""GGUF checkpoints: tiny Llama GGUF files written with the gguf package's writer (float and
quantised) read equal to transformers' own GGUF loading, bit for bit; interpolate and the live
model take them; the merged output loads with AutoModelForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")
from gguf_files import tiny_llama, write_llama_gguf

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.merge.interpolate import interpolate
from mergekit_sg.models.adapters import load_model
from mergekit_sg.models.linear_path import LinearPath

QTYPES = ("F32", "F16", "Q8_0", "Q4_1")


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    out: dict[str, Path] = {}
    for q in QTYPES:
        out[f"pre-{q}"] = write_llama_gguf(tiny_llama(0), root / f"pre-{q}.gguf", q)
    out["ft-Q8_0"] = write_llama_gguf(tiny_llama(1), root / "ft-Q8_0.gguf", "Q8_0")
    out["untied-F32"] = write_llama_gguf(tiny_llama(2, tie=False), root / "untied.gguf", "F32")
    return out


def _transformers_state(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model.state_dict()


@pytest.mark.parametrize("qtype", QTYPES)
def test_reads_equal_transformers_gguf_loading(gguf_files, qtype: str) -> None:
    path = gguf_files[f"pre-{qtype}"]
    want = _transformers_state(path)
    with open_checkpoint(path) as ck:
        assert ck.format == "gguf" and ck.kind == "transformers"
        # the tied lm_head is the one tensor the file lacks, as in transformers' load
        assert set(want) - set(ck.tensors) == {"lm_head.weight"}
        assert set(ck.tensors) <= set(want)
        for name, info in ck.tensors.items():
            got = ck.read(name)
            assert info.dtype == torch.float32 and tuple(got.shape) == info.shape
            assert torch.equal(got, want[name]), name
            # chunked reads (the streaming executor's path) are the same bytes
            flat = torch.cat([ck.read_flat(name, s, 7) for s in range(0, info.numel, 7)])
            assert torch.equal(flat, want[name].reshape(-1))


def test_float_gguf_round_trips_the_hf_weights(gguf_files) -> None:
    """F32 GGUF of an untied model: llama.cpp's q/k permutation is undone exactly."""
    original = tiny_llama(2, tie=False).state_dict()
    with open_checkpoint(gguf_files["untied-F32"]) as ck:
        assert set(ck.tensors) == set(original)
        for name in ck.tensors:
            assert torch.equal(ck.read(name), original[name]), name


def test_quantised_values_are_close_to_the_original(gguf_files) -> None:
    original = tiny_llama(0).state_dict()
    with open_checkpoint(gguf_files["pre-Q8_0"]) as ck:
        w = "model.layers.0.self_attn.q_proj.weight"
        err = (ck.read(w) - original[w]).abs().max().item()
        assert 0 < err < 0.01 * original[w].abs().max().item()


def test_side_files_are_what_transformers_builds(gguf_files) -> None:
    from transformers import AutoConfig, AutoTokenizer

    path = gguf_files["pre-Q4_1"]
    with open_checkpoint(path) as ck:
        side = ck.side_dir
    assert side is not None
    ours = json.loads((side / "config.json").read_text())
    theirs = AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert ours[key] == theirs[key]
    assert ours["architectures"] == ["LlamaForCausalLM"] and ours["tie_word_embeddings"] is True
    text = "the movie was very good"
    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert AutoTokenizer.from_pretrained(side)(text)["input_ids"] == ref_tok(text)["input_ids"]


def test_interpolate_two_ggufs_is_the_formula(gguf_files, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    pre, ft = gguf_files["pre-Q4_1"], gguf_files["ft-Q8_0"]
    alphas = [0.0, 0.3, 1.0]
    res = interpolate(pre, ft, tmp_path / "out", alpha=alphas)
    a, b = _transformers_state(pre), _transformers_state(ft)
    for alpha in alphas:
        d = res.outputs[alpha]
        model = AutoModelForCausalLM.from_pretrained(d)  # config + weights beside each other
        got = model.state_dict()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        for name in a:
            ref = (1 - alpha) * a[name].double() + alpha * b[name].double()
            if alpha in (0.0, 1.0):
                assert torch.equal(got[name], (a if alpha == 0 else b)[name]), name
            else:
                torch.testing.assert_close(got[name].double(), ref, rtol=1e-6, atol=1e-7)
        assert (d / "tokenizer_config.json").exists()


def test_live_model_from_gguf_matches_transformers(gguf_files) -> None:
    from transformers import AutoModelForCausalLM

    path = gguf_files["pre-Q8_0"]
    lm = load_model("hf:causal-lm", path)
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ids = lm.tokenizer("the film was not bad", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm.module(ids).logits, ref(ids).logits)
    # LinearPath walks GGUF endpoints: alpha=1 is the other file's model exactly
    path_ = LinearPath(lm.module, path, gguf_files["ft-Q8_0"])
    path_.set(1.0)
    want = _transformers_state(gguf_files["ft-Q8_0"])
    for name, t in lm.module.state_dict().items():
        assert torch.equal(t, want[name]), name


def test_broken_gguf_is_one_error(tmp_path: Path, gguf_files) -> None:
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(gguf_files["pre-F32"].read_bytes()[:4096])
    with pytest.raises(SgMergeError, match=r"cut\.gguf"):
        open_checkpoint(bad)


def test_cli_inspect_and_interpolate_take_gguf(gguf_files, tmp_path: Path, capsys) -> None:
    from mergekit_sg.cli.app import main

    assert main(["inspect", str(gguf_files["pre-Q4_1"])]) == 0
    shown = capsys.readouterr().out
    assert "gguf" in shown and "transformers" in shown
    out = tmp_path / "merged"
    code = main(
        [
            "interpolate",
            str(gguf_files["pre-Q4_1"]),
            str(gguf_files["ft-Q8_0"]),
            "--alpha",
            "0.5",
            "-o",
            str(out),
        ]
    )
    assert code == 0 and (out / "config.json").exists() and (out / "model.safetensors").exists()


def test_finetune_takes_a_gguf_as_pretrained(gguf_files, tmp_path: Path) -> None:
    """`finetune --model hf:causal-lm --pretrained X.gguf`: the dequantised model is the start
    (step 0's KD term against the frozen copy is 0) and the output is a plain HF folder whose
    weights moved from the GGUF's."""
    from mergekit_sg.tune import finetune

    pre = gguf_files["pre-F32"]
    text = tmp_path / "text.txt"
    text.write_text("".join(f"the film number {i} is good\n" for i in range(8)))
    res = finetune(
        tmp_path / "ft",
        model="hf:causal-lm",
        pretrained=str(pre),
        data=str(text),
        epochs=1,
        batch_size=4,
        lr=1e-2,
        reg="kd",
        reg_weight=0.1,
        log_every=1,
    )
    steps = [r for r in res.log if r["type"] == "step"]
    assert steps[0]["reg_value"] == pytest.approx(0.0, abs=1e-6)
    start = _transformers_state(pre)
    out = load_model("hf:causal-lm", tmp_path / "ft").module.state_dict()
    name = "model.layers.0.mlp.up_proj.weight"
    assert out[name].shape == start[name].shape and not torch.equal(out[name], start[name])
