"""Evaluator specs are validated by one pydantic model per kind when they are parsed, with no
data or model loaded; `sgmerge run --dry-run` uses that to refuse a recipe whose evaluator
strings are wrong with one line and status 2, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli
from hypothesis import given
from hypothesis import strategies as st

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals import (
    SPEC_MODELS,
    ClipClassifierOptions,
    ClipZeroShotOptions,
    SeqClassificationOptions,
    parse_eval,
    validate_options,
)


def test_parse_validates_without_reading_the_data(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"  # parsing must not open it
    spec = parse_eval(f"speciality=seq-classification:{missing},limit=5,auc=true,text=review")
    assert (spec.name, spec.kind, spec.arg, spec.role) == (
        "speciality",
        "seq-classification",
        str(missing),
        "speciality",
    )
    o = validate_options(spec.name, spec.kind, spec.options)
    assert isinstance(o, SeqClassificationOptions)
    assert (o.limit, o.auc, o.text, o.label, o.max_length, o.batch_size) == (
        5,
        True,
        "review",
        "label",
        128,
        32,
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x=seq-classification:d.csv,txet=review", ["unknown option(s) txet", "allowed:", "text"]),
        ("x=seq-classifcation:d.csv", ["unknown evaluator 'seq-classifcation'", "known:"]),
        ("x=lm-perplexity:d.txt,limit=two", ["option limit='two'", "integer"]),
        ("x=lm-perplexity:d.txt,max_length=1", ["option max_length='1'", "greater than or equal"]),
        ("x=lm-perplexity:d.txt,unit=word", ["option unit='word'", "'line' or 'file'"]),
        ("x=lm-perplexity:d.jsonl,prompt=p,field=f", ["prompt=/response=", "field= and unit="]),
        ("x=clip-zeroshot:imgs/,primary=top3", ["primary='top3'", "top1, top5, loss"]),
        ("x=embedding-similarity:lee,a=-1", ["option a='-1'"]),
        ("x=lm-multiple-choice:q.jsonl,one_based=maybe", ["option one_based='maybe'"]),
    ],
)
def test_a_wrong_spec_is_one_line_naming_the_evaluator(text: str, words: list[str]) -> None:
    with pytest.raises(SgMergeError) as e:
        parse_eval(text)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--eval x")
    for w in words:
        assert w in msg, (w, msg)


def test_python_evaluators_keep_their_free_options() -> None:
    spec = parse_eval("g=python:evalfns:lm_loss,primary=accuracy,anything=1")
    assert spec.kind == "python" and spec.arg == "evalfns:lm_loss"
    assert spec.options == {"primary": "accuracy", "anything": "1"}


def test_the_clip_kinds_share_their_image_options() -> None:
    """clip-classifier takes exactly the image options; clip-zeroshot adds its text ones."""
    shared = set(ClipClassifierOptions.model_fields)
    assert shared < set(ClipZeroShotOptions.model_fields)
    assert set(ClipZeroShotOptions.model_fields) - shared == {
        "classes",
        "templates",
        "text_batch_size",
    }
    with pytest.raises(SgMergeError, match=r"unknown option.*classes"):
        parse_eval("x=clip-classifier:imgs/,classes=c.txt")


@given(
    kind=st.sampled_from(sorted(SPEC_MODELS)),
    n=st.integers(min_value=-3, max_value=10**6),
)
def test_limit_is_a_positive_integer_for_every_kind(kind: str, n: int) -> None:
    text = f"x={kind}:data,limit={n}"
    if n >= 1:
        assert validate_options("x", kind, parse_eval(text).options).limit == n
    else:
        with pytest.raises(SgMergeError, match="option limit="):
            parse_eval(text)


def _scan_recipe(tmp_path: Path, evals: list[str]) -> Path:
    import torch
    from safetensors.torch import save_file

    pre, ft = tmp_path / "pre", tmp_path / "ft"
    for d in (pre, ft):  # a dry run also checks that the two checkpoints' keys pair up
        d.mkdir()
        save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))
    lines = "\n".join(f"    - {e}" for e in evals)
    path = tmp_path / "scan.yaml"
    path.write_text(
        "command: scan\n"
        f"inputs: {{pretrained: {pre}, finetuned: {ft}}}\n"
        f"out: {tmp_path / 'out'}\n"
        "options:\n  model: hf:causal-lm\n  eval:\n" + lines + "\n"
    )
    return path


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("speciality=lm-perplexity:test.txt,stirde=4", ["unknown option(s) stirde"]),
        ("generality=lm-perplexty:test.txt", ["unknown evaluator 'lm-perplexty'"]),
    ],
)
def test_dry_run_refuses_a_wrong_evaluator_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, words: list[str]
) -> None:
    recipe = _scan_recipe(tmp_path, ["speciality=lm-perplexity:test.txt", bad])
    r = cli(capsys, "run", str(recipe), "--dry-run")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgmerge: error: ")
    assert f"{recipe}: options.eval: --eval" in lines[0]
    for w in words:
        assert w in lines[0]
    assert not (tmp_path / "out").exists() and "would run" not in r.stdout


def test_dry_run_accepts_right_evaluator_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _scan_recipe(
        tmp_path, ["speciality=lm-perplexity:test.txt,stride=4", "g=python:evalfns:lm_loss"]
    )
    r = cli(capsys, "run", str(recipe), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would run: scan" in r.stdout and not (tmp_path / "out").exists()
