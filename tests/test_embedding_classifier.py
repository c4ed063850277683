"""The embedding classifier: a zero-shot head from prompt embeddings, exact save/load, and a
linear path between two of them identical to interpolate's output."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mergekit_sg import interpolate
from mergekit_sg.commands import minilm_dir
from mergekit_sg.models import (
    EmbeddingClassifier,
    LinearPath,
    load_model,
    mean_pool,
    save_embedding_classifier,
    zero_shot_head,
)


def test_zero_shot_head_is_prompt_embeddings_and_classifies(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    d = minilm_dir()
    tok = AutoTokenizer.from_pretrained(d)
    enc = AutoModel.from_pretrained(d, add_pooling_layer=False).eval()
    model = EmbeddingClassifier(enc, ["rotten", "fresh"], scale=20.0).eval()
    prompts = ["a bad movie", "a good movie"]
    zero_shot_head(model, tok, prompts)
    b = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = F.normalize(mean_pool(enc(**b).last_hidden_state, b["attention_mask"]), dim=-1)
    torch.testing.assert_close(model.head.weight, want)
    reviews = tok(
        ["a moving, beautiful triumph", "dull, boring and far too long"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        assert model(**reviews).logits.argmax(-1).tolist() == [1, 0]
    save_embedding_classifier(model, tmp_path, source_dir=d)
    loaded = load_model("hf", tmp_path)  # detected from sgmerge_head.json
    assert loaded.kind == "hf:embedding-classifier"
    with torch.no_grad():
        assert torch.equal(loaded.module(**reviews).logits, model(**reviews).logits)


def test_linear_path_between_classifiers_equals_interpolate(bert_pair, tmp_path: Path) -> None:
    from transformers import AutoModel

    dirs = []
    for role, seed in (("pre", 0), ("ft", 1)):
        enc = AutoModel.from_pretrained(bert_pair[role])
        m = EmbeddingClassifier(enc, ["a", "b", "c"], scale=10.0)
        torch.nn.init.normal_(m.head.weight, generator=torch.Generator().manual_seed(seed))
        out = tmp_path / role
        out.mkdir()
        save_embedding_classifier(m, out)
        dirs.append(out)
    merged = interpolate(dirs[0], dirs[1], tmp_path / "m", alpha=0.4).out
    live = load_model("hf:embedding-classifier", dirs[0])
    path = LinearPath(
        live.module, dirs[0], dirs[1], rename=live.rename, side_weights=live.side_weights
    )
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        got = path.set(0.4)(ids).logits
        want = load_model("hf", merged).module(ids).logits
    assert torch.equal(got, want)
