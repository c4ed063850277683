"""Output-space ensembles beside weight-space merges (`scan --ensemble`), KgCoOp
(`coop --kg-weight`) and the cross-dataset / domain-generalisation protocol recipes.

The ensemble's metrics are checked against the endpoint models' own (exactly, at alpha 0 and 1),
against a float64 hand computation of the mixture at alpha 0.5 (a tiny BERT classifier, a tiny
Llama, a tiny open_clip), and a model ensembled with itself is the model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import cli, colour_png, register_tiny_clip
from hypothesis import given, settings
from hypothesis import strategies as st

from mergekit_sg.evals import build_evaluator
from mergekit_sg.models import load_model
from mergekit_sg.models.ensemble import mix_embeddings, mix_scores, mix_token_logprobs

WORDS = [
    "good",
    "bad",
    "fine",
    "awful",
    "great",
    "poor",
    "nice",
    "dull",
    "film",
    "plot",
    "cast",
    "story",
    "acting",
    "the",
    "a",
    "was",
    "very",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tokenizer(special: list[str], template: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *special, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in special]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# ---- the mixing rules -------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(st.floats(0.01, 0.99), st.integers(0, 10_000))
def test_mixing_rules_against_float64(alpha: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    l0, l1 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    p = (1 - alpha) * l0.double().softmax(-1) + alpha * l1.double().softmax(-1)
    torch.testing.assert_close(mix_scores(l0, l1, alpha).double(), p.log(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(
        mix_scores(l0, l1, alpha).double().exp().sum(-1), torch.ones(5, dtype=torch.float64)
    )
    want = (1 - alpha) * l0.double() + alpha * l1.double()
    torch.testing.assert_close(mix_scores(l0, l1, alpha, "logits").double(), want)
    b0, b1 = l0[:, :1], l1[:, :1]  # one output column: a binary logit
    pb = (1 - alpha) * b0.double().sigmoid() + alpha * b1.double().sigmoid()
    torch.testing.assert_close(mix_scores(b0, b1, alpha).double(), (pb / (1 - pb)).log())
    lp0, lp1 = -torch.rand(7, generator=g, dtype=torch.float64), -torch.rand(7, generator=g)
    got = mix_token_logprobs(lp0, lp1.double(), alpha)
    torch.testing.assert_close(got, ((1 - alpha) * lp0.exp() + alpha * lp1.double().exp()).log())
    e0, e1 = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    m = (1 - alpha) * F.normalize(e0.double(), dim=-1) + alpha * F.normalize(e1.double(), dim=-1)
    torch.testing.assert_close(
        mix_embeddings(e0, e1, alpha).double(),
        m / m.norm(dim=-1, keepdim=True),
        rtol=1e-6,
        atol=1e-6,
    )
    for a, want_t in ((0.0, l0), (1.0, l1)):  # the endpoints are returned untouched
        assert mix_scores(l0, l1, a) is want_t and mix_scores(l0, l1, a, "logits") is want_t


# ---- a tiny classifier: the whole scan ---------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("cls")
    tok = _tokenizer(["[CLS]", "[SEP]"], "[CLS] $A [SEP]")
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        num_labels=3,
    )
    out = {}
    for role, seed in (("pre", 0), ("ft", 1)):
        torch.manual_seed(seed)
        BertForSequenceClassification(cfg).save_pretrained(root / role)
        tok.save_pretrained(root / role)
        out[role] = root / role
    rng = random.Random(0)
    for name in ("spec", "gen"):
        rows = [(_text(rng, rng.randint(1, 12)), rng.randrange(3)) for _ in range(30)]
        (root / f"{name}.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
        out[name] = root / f"{name}.csv"
    return out


def _direct_logits(model_dir: Path, csv_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits of each text on its own (no batching), and the labels."""
    model = load_model("hf:seq-classification", model_dir)
    rows = [ln.rsplit(",", 1) for ln in csv_path.read_text().splitlines()[1:]]
    with torch.no_grad():
        logits = [
            model.module(**model.tokenizer(t, return_tensors="pt")).logits[0] for t, _ in rows
        ]
    return torch.stack(logits).double(), torch.tensor([int(y) for _, y in rows])


def test_classifier_scan_records_both_spaces(classifier_pair, tmp_path: Path, capsys) -> None:
    from mergekit_sg.path.run import ScanOptions, scan

    p = classifier_pair
    evals = [
        f"speciality=seq-classification:{p['spec']},batch_size=7",
        f"generality=seq-classification:{p['gen']}",
    ]
    opts = ScanOptions(model="hf:seq-classification", eval=evals, alphas="0.5", ensemble="probs")
    rep = scan(p["pre"], p["ft"], tmp_path / "scan", opts)
    assert [q.alpha for q in rep.result.outputs] == [0.0, 0.5, 1.0] and rep.result.mix == "probs"
    out0, half, out1 = rep.result.outputs
    for role, point in (("pre", out0), ("ft", out1)):  # the endpoints, exactly
        model = load_model("hf:seq-classification", p[role])
        for spec in evals:
            ev = build_evaluator(spec)
            got = dict(point.metrics[ev.name])
            assert got.pop("seconds") > 0
            assert got == ev(model)
    # alpha 0.5: the hand-computed mixture of the two classifiers' probabilities
    l0, y = _direct_logits(p["pre"], p["spec"])
    l1, _ = _direct_logits(p["ft"], p["spec"])
    mix = 0.5 * l0.softmax(-1) + 0.5 * l1.softmax(-1)
    got = half.metrics["speciality"]
    assert got["accuracy"] == (mix.argmax(-1) == y).double().mean().item()
    assert got["loss"] == pytest.approx(-mix[torch.arange(len(y)), y].log().mean().item(), rel=1e-5)
    # the records carry the space; the table, the CSV and the plot show both curves
    recs = [json.loads(ln) for ln in (tmp_path / "scan" / "results.jsonl").read_text().splitlines()]
    assert {r["space"] for r in recs} == {"weight", "output"}
    assert all(r["inputs"]["ensemble"] == "probs" for r in recs if r["space"] == "output")
    from mergekit_sg.path.report import scan_table, write_scan_outputs

    files = write_scan_outputs(rep, tmp_path / "scan")
    assert (tmp_path / "scan" / "tradeoff.png") in files
    csv_text = (tmp_path / "scan" / "results.csv").read_text()
    assert csv_text.count("\nweight,") == 3 and csv_text.count("\noutput,") == 3
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(scan_table(rep))
    text = console.export_text()
    assert "output-space ensemble (probs)" in text and "0.5 ens" in text
    # a rerun resumes from the records: no model is run for the ensemble again
    import mergekit_sg.path.ensemble as pe

    calls = []
    real = pe.endpoint_outputs
    pe.endpoint_outputs = lambda *a: calls.append(a) or real(*a)  # type: ignore[assignment]
    try:
        again = scan(p["pre"], p["ft"], tmp_path / "scan", opts)
    finally:
        pe.endpoint_outputs = real  # type: ignore[assignment]
    assert not calls and again.result.outputs[1].metrics == half.metrics


def test_ensemble_with_itself_is_the_model_and_logits_mix(classifier_pair, tmp_path: Path) -> None:
    from mergekit_sg.path.run import scan

    p = classifier_pair
    spec = f"speciality=seq-classification:{p['spec']}"
    rep = scan(
        p["pre"], p["pre"], None, model="hf:seq-classification", eval=[spec], alphas="0.3,0.5",
        ensemble="probs",
    )  # fmt: skip
    alone = build_evaluator(spec)(load_model("hf:seq-classification", p["pre"]))
    for point in rep.result.outputs:
        got = point.metrics["speciality"]
        assert got["accuracy"] == alone["accuracy"] and got["macro_f1"] == alone["macro_f1"]
        assert got["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    rep = scan(
        p["pre"], p["ft"], None, model="hf:seq-classification", eval=[spec], alphas="0.5",
        ensemble="logits",
    )  # fmt: skip
    l0, y = _direct_logits(p["pre"], p["spec"])
    l1, _ = _direct_logits(p["ft"], p["spec"])
    want = F.cross_entropy(0.5 * l0 + 0.5 * l1, y).item()
    assert rep.result.outputs[1].metrics["speciality"]["loss"] == pytest.approx(want, rel=1e-5)


def test_cli_bare_ensemble_flag_and_refusals(classifier_pair, tmp_path: Path, capsys) -> None:
    p = classifier_pair
    spec = f"speciality=seq-classification:{p['spec']}"
    out = tmp_path / "s"
    res = cli(capsys, "scan", str(p["pre"]), str(p["ft"]), "--model", "hf:seq-classification",
              "--eval", spec, "--alphas", "0.5", "-q", "-o", str(out), "--ensemble")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "output-space ensemble (probs)" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [r["space"] for r in summary["rows"]] == ["weight"] * 3 + ["output"] * 3
    bad = cli(capsys, "scan", str(p["pre"]), str(p["ft"]), "--model", "hf:seq-classification",
              "--eval", "x=python:evalfns:weight_mean", "--ensemble", "logits",
              "-o", str(tmp_path / "no"))  # fmt: skip
    assert bad.returncode == 2 and "does not say how outputs mix" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "no").exists()


# ---- a tiny causal LM: token probabilities mixed -----------------------------------------------


@pytest.fixture(scope="module")
def lm_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lm")
    tok = _tokenizer(["[BOS]"], "[BOS] $A")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    out = {}
    for role, seed in (("pre", 0), ("ft", 5)):
        torch.manual_seed(seed)
        LlamaForCausalLM(cfg).save_pretrained(root / role)
        tok.save_pretrained(root / role)
        out[role] = root / role
    rng = random.Random(1)
    (root / "docs.txt").write_text("".join(_text(rng, rng.randint(3, 9)) + "\n" for _ in range(6)))
    qs = [
        {"question": _text(rng, 4), "choices": [_text(rng, 2) for _ in range(3)], "answer": i % 3}
        for i in range(4)
    ]
    (root / "mc.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    out["docs"], out["mc"] = root / "docs.txt", root / "mc.jsonl"
    return out


def _token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """float64 log p(t_i | t_<i) for i >= 1 of one unpadded sequence."""
    with torch.no_grad():
        logits = model.module(input_ids=torch.tensor([ids])).logits[0].double()
    return logits[:-1].log_softmax(-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def test_language_model_ensemble_mixes_token_probabilities(lm_pair) -> None:
    m0 = load_model("hf:causal-lm", lm_pair["pre"])
    m1 = load_model("hf:causal-lm", lm_pair["ft"])
    ppl = build_evaluator(f"x=lm-perplexity:{lm_pair['docs']},batch_size=4")
    mc = build_evaluator(f"y=lm-multiple-choice:{lm_pair['mc']}")
    for ev in (ppl, mc):
        o0, o1 = ev.outputs(m0), ev.outputs(m1)
        assert ev.mixed(o0, o1, 0.0, "probs") == ev(m0)
        assert ev.mixed(o0, o1, 1.0, "probs") == ev(m1)
        assert ev.mixed(o0, o0, 0.5, "probs") == pytest.approx(ev(m0), rel=1e-9)
    # perplexity of the mixture, token by token, by hand
    tok = m0.tokenizer
    nll, n = 0.0, 0
    for line in lm_pair["docs"].read_text().splitlines():
        ids = tok(line)["input_ids"]
        p = 0.5 * _token_logprobs(m0, ids).exp() + 0.5 * _token_logprobs(m1, ids).exp()
        nll -= p.log().sum().item()
        n += len(ids) - 1
    got = ppl.mixed(ppl.outputs(m0), ppl.outputs(m1), 0.5, "probs")
    assert got["nll"] == pytest.approx(nll / n, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    # multiple choice: each choice scored by the mixture's summed log-probability
    hits, loss = 0, 0.0
    for q in (json.loads(ln) for ln in lm_pair["mc"].read_text().splitlines()):
        ctx = tok(f"Question: {q['question']}\nAnswer:")["input_ids"]
        scores = []
        for c in q["choices"]:
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            both = [_token_logprobs(m, ctx + cont)[-len(cont) :].exp() for m in (m0, m1)]
            scores.append((0.5 * both[0] + 0.5 * both[1]).log().sum().item())
        hits += int(np.argmax(scores)) == q["answer"]
        loss -= torch.tensor(scores, dtype=torch.float64).log_softmax(0)[q["answer"]].item()
    got = mc.mixed(mc.outputs(m0), mc.outputs(m1), 0.5, "probs")
    assert got["accuracy"] == hits / 4 and got["loss"] == pytest.approx(loss / 4, rel=1e-5)


# ---- a tiny open_clip: CLIP logits, and prompts ensembled with the zero-shot classifier --------


COLOUR_CLASSES = {"red": (230, 20, 20), "green": (20, 220, 30), "blue": (20, 30, 230)}


@pytest.fixture(scope="module")
def colour_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    for name, rgb in COLOUR_CLASSES.items():
        for i in range(4):
            colour_png(root / name / f"{i}.png", rgb, noise=40, seed=i)
    return root


def test_open_clip_ensemble_mixes_clip_probabilities(clip_pair, colour_images) -> None:
    name = register_tiny_clip()
    m0 = load_model(f"open_clip:{name}", clip_pair["pre"])
    m1 = load_model(f"open_clip:{name}", clip_pair["ft"])
    ev = build_evaluator(f"x=clip-zeroshot:{colour_images}")
    o0, o1 = ev.outputs(m0), ev.outputs(m1)
    assert ev.mixed(o0, o1, 0.0, "probs") == ev(m0) and ev.mixed(o0, o1, 1.0, "probs") == ev(m1)

    def logits(m) -> torch.Tensor:  # by hand: s * norm(image) @ norm(mean of norm(text))
        from PIL import Image

        paths = sorted(colour_images.rglob("*.png"))
        with torch.no_grad():
            img = m.module.encode_image(torch.stack([m.preprocess(Image.open(p)) for p in paths]))
            text = [
                F.normalize(
                    m.module.encode_text(m.tokenizer([t.format(c) for t in ev.templates])), dim=-1
                ).mean(0)
                for c in ev.classnames
            ]
            head = F.normalize(torch.stack(text), dim=-1)
            return (
                m.module.logit_scale.exp().double() * (F.normalize(img, dim=-1) @ head.T).double()
            )

    p = 0.5 * logits(m0).softmax(-1) + 0.5 * logits(m1).softmax(-1)
    y = torch.tensor(ev.targets)
    got = ev.mixed(o0, o1, 0.5, "probs")
    assert got["top1"] == (p.argmax(-1) == y).double().mean().item()
    assert got["loss"] == pytest.approx(-p[torch.arange(len(y)), y].log().mean().item(), rel=1e-4)
