"""Each built-in evaluator on small inputs with answers known by construction or computed
directly (one example at a time, no batching, padding or caching): classifiers whose
predictions are fixed by their weights, perplexity and choice log-likelihoods against
`model(ids)`, embedding correlations against numpy, CLIP zero-shot against open_clip's own
classifier builder. The real MiniLM's Lee and wordsim353 correlations are checked too."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    COLOURS,
    ColourClip,
    colour_png,
    colour_tokens,
    perturb,
    register_tiny_clip,
    to_tensor,
)

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals import (
    Evaluator,
    build_evaluator,
    datasets,
    macro_f1,
    pearson,
    ranks,
    roc_auc,
    spearman,
)
from mergekit_sg.evals.clip_zeroshot import OPENAI_IMAGENET_TEMPLATES
from mergekit_sg.models import LoadedModel, load_model

WORDS = [
    "the",
    "a",
    "good",
    "bad",
    "movie",
    "film",
    "is",
    "was",
    "great",
    "awful",
    "plot",
    "cat",
    "dog",
    "tiger",
    "car",
    "red",
    "blue",
]


@pytest.fixture(autouse=True)
def _one_thread(request: pytest.FixtureRequest):
    """The tiny models' matrices are so small that a second thread's hand-off costs more than
    the math (10x on a busy 2-core machine); the real MiniLM keeps torch's default."""
    if "real_minilm" in request.node.name:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def word_tokenizer(special: list[str], template: str):
    """A word-level fast tokenizer over WORDS (unknown words -> [UNK])."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *special, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in special]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def random_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# ---- stats ------------------------------------------------------------------------------------


def test_stats_helpers_exact_values() -> None:
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x.tolist(), y.tolist()) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    assert spearman(x.tolist(), y.tolist()) == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    s, lab = [0.9, 0.9, -0.1, -1.1, -1.1, -0.1], [1, 1, 1, 1, 0, 0]
    pairs = [
        (p, n)
        for p, lp in zip(s, lab, strict=True)
        for n, ln in zip(s, lab, strict=True)
        if lp == 1 and ln == 0
    ]
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(s, lab) == brute == 0.75
    assert macro_f1([1, 0, 1, 0, 0, 0], [1, 0, 1, 1, 1, 0]) == pytest.approx(2 / 3)


# ---- seq-classification -----------------------------------------------------------------------


class CountClassifier(torch.nn.Module):
    """logits = [#'bad' + 0.1, #'good']: the prediction is fixed by which word a text holds."""

    def __init__(self, vocab: int, good: int, bad: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(vocab, 2))
        self.b = torch.nn.Parameter(torch.tensor([0.1, 0.0]))
        with torch.no_grad():
            self.w[bad, 0] = 1.0
            self.w[good, 1] = 1.0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(input_ids, self.w.shape[0]).float() * attention_mask[..., None]
        return onehot.sum(1) @ self.w + self.b


# text, label, logit margin (good - bad - 0.1), right?
CLS_ROWS = [
    ("the good movie", "fresh"),  # 0.9 -> fresh, right
    ("a bad film", "rotten"),  # -1.1 -> rotten, right
    ("good good bad", "fresh"),  # 0.9 -> fresh, right
    ("the plot", "fresh"),  # -0.1 -> rotten, wrong
    ("bad", "fresh"),  # -1.1 -> rotten, wrong
    ("great film", "rotten"),  # -0.1 -> rotten, right
]


@pytest.fixture(scope="module")
def count_model() -> LoadedModel:
    tok = word_tokenizer(["[CLS]"], "[CLS] $A")
    module = CountClassifier(
        len(tok), tok.convert_tokens_to_ids("good"), tok.convert_tokens_to_ids("bad")
    )
    return LoadedModel(module.eval(), "python", "python:test", Path("."), tokenizer=tok)


def test_seq_classification_known_accuracy_f1_auc(count_model, tmp_path: Path) -> None:
    csv_path = tmp_path / "test.csv"
    csv_path.write_text("review,fresh\n" + "".join(f"{t},{lab}\n" for t, lab in CLS_ROWS))
    ev = build_evaluator(
        f"speciality=seq-classification:{csv_path},text=review,label=fresh,"
        "labels=rotten+fresh,auc=true,batch_size=4"
    )
    assert (ev.role, ev.primary, ev.lower_is_better) == ("speciality", "accuracy", {"loss"})
    assert isinstance(ev, Evaluator)
    out = ev(count_model)
    margins = [0.9, -1.1, 0.9, -0.1, -1.1, -0.1]
    labels = [1, 0, 1, 1, 1, 0]
    loss = (
        sum(math.log1p(math.exp(-m if y else m)) for m, y in zip(margins, labels, strict=True)) / 6
    )
    assert out["accuracy"] == 4 / 6
    assert out["macro_f1"] == pytest.approx(2 / 3)
    assert out["auc"] == pytest.approx(6 / 8)
    assert out["loss"] == pytest.approx(loss, rel=1e-6)
    flipped = build_evaluator(
        f"x=seq-classification:{csv_path},text=review,label=fresh,labels=fresh+rotten"
    )
    assert flipped(count_model)["accuracy"] == 2 / 6


def test_seq_classification_jsonl_numeric_labels_limit(count_model, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": int(y == "fresh")}) + "\n" for t, y in CLS_ROWS)
    )
    assert build_evaluator(f"x=seq-classification:{path}")(count_model)["accuracy"] == 4 / 6
    assert build_evaluator(f"x=seq-classification:{path},limit=3")(count_model)["accuracy"] == 1.0
    ev = build_evaluator(f"x=seq-classification:{path},primary=auc")
    assert ev.primary == "auc" and ev(count_model)["auc"] == pytest.approx(0.75)


def test_seq_classification_errors(count_model, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\ngood,fresh\n")
    with pytest.raises(SgMergeError, match="no column 'review'"):
        build_evaluator(f"x=seq-classification:{path},text=review")
    with pytest.raises(SgMergeError, match=r"unknown option.*txet"):
        build_evaluator(f"x=seq-classification:{path},txet=review")
    with pytest.raises(SgMergeError, match="primary='f1'"):
        build_evaluator(f"x=seq-classification:{path},primary=f1")
    with pytest.raises(SgMergeError, match="label 'fresh' is neither"):
        build_evaluator(f"x=seq-classification:{path}")(count_model)
    with pytest.raises(SgMergeError, match="is not in labels=neg\\+pos"):
        build_evaluator(f"x=seq-classification:{path},labels=neg+pos")(count_model)


def test_seq_classification_builtin_rotten_tomatoes(count_model) -> None:
    ev = build_evaluator("speciality=seq-classification:rotten-tomatoes-test,limit=50")
    test = datasets.rotten_tomatoes_split()[1][:50]
    assert ev.texts == [e.text for e in test]
    assert ev.raw_labels == [("rotten", "fresh")[e.label] for e in test]
    out = ev(count_model)
    tok = count_model.tokenizer
    with torch.no_grad():
        direct = [
            int(
                count_model.module(
                    torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
                ).argmax()
            )
            for ids in tok([e.text for e in test], truncation=True, max_length=128)["input_ids"]
        ]
    assert out["accuracy"] == sum(p == e.label for p, e in zip(direct, test, strict=True)) / 50


@pytest.mark.skipif(not datasets.amazon_available(), reason="r-cran-modeldata not installed")
def test_seq_classification_builtin_amazon_reports_auc(count_model) -> None:
    ev = build_evaluator("ood=seq-classification:amazon-fine-food-test,limit=80")
    test = datasets.amazon_fine_food()[1][:80]
    assert ev.raw_labels == [("other", "great")[e.label] for e in test]
    out = ev(count_model)
    logits = ev.logits(count_model)
    margin = (logits[:, 1] - logits[:, 0]).tolist()
    pos = [m for m, e in zip(margin, test, strict=True) if e.label == 1]
    neg = [m for m, e in zip(margin, test, strict=True) if e.label == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert out["auc"] == pytest.approx(wins / (len(pos) * len(neg)))


def test_seq_classification_real_hf_model_matches_unbatched(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    tok = word_tokenizer(["[CLS]", "[SEP]"], "[CLS] $A [SEP]")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        num_labels=3,
    )
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model = load_model("hf:seq-classification", tmp_path / "m")
    rng = random.Random(0)
    rows = [(random_text(rng, rng.randint(1, 20)), rng.randrange(3)) for _ in range(40)]
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    out = build_evaluator(f"x=seq-classification:{path},batch_size=7")(model)
    logits = []
    with torch.no_grad():
        for t, _ in rows:
            logits.append(model.module(**tok(t, return_tensors="pt")).logits[0])
    logits_t = torch.stack(logits)
    preds = logits_t.argmax(-1).tolist()
    assert out["accuracy"] == sum(p == y for p, (_, y) in zip(preds, rows, strict=True)) / 40
    assert out["loss"] == pytest.approx(
        F.cross_entropy(logits_t, torch.tensor([y for _, y in rows])).item(), rel=1e-4
    )


# ---- causal LM: perplexity and multiple choice ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = word_tokenizer(["[BOS]"], "[BOS] $A")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("lm") / "m"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return load_model("hf:causal-lm", path)


def _direct_logprobs(model: LoadedModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.module(torch.tensor([ids])).logits[0].double().log_softmax(-1)


def test_perplexity_matches_model_loss(tiny_lm, tmp_path: Path) -> None:
    rng = random.Random(1)
    docs = [random_text(rng, rng.randint(1, 40)) for _ in range(12)]
    (tmp_path / "held.txt").write_text("\n".join([*docs[:6], "", *docs[6:]]) + "\n")
    total = count = 0.0
    with torch.no_grad():
        for d in docs:
            ids = torch.tensor([tiny_lm.tokenizer(d)["input_ids"]])
            total += tiny_lm.module(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    ev = build_evaluator(f"loss=lm-perplexity:{tmp_path / 'held.txt'},batch_size=5")
    lower = {"perplexity", "nll", "word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert ev.lower_is_better == lower and ev.primary == "perplexity"
    out = ev(tiny_lm)
    assert out["nll"] == pytest.approx(total / count, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    (tmp_path / "held.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    again = build_evaluator(f"x=lm-perplexity:{tmp_path / 'held.jsonl'},field=body")(tiny_lm)
    assert again["nll"] == pytest.approx(out["nll"], rel=1e-6)


def test_perplexity_strided_windows_score_each_token_once(tiny_lm, tmp_path: Path) -> None:
    rng = random.Random(2)
    docs = [random_text(rng, n) for n in (30, 7, 19)]
    (tmp_path / "t.txt").write_text("\n".join(docs))
    total = count = 0.0
    for d in docs:
        ids = tiny_lm.tokenizer(d)["input_ids"]
        for t in range(1, len(ids)):  # target t is scored in chunk (t-1)//3, ending at t1
            t1 = min(1 + 3 * ((t - 1) // 3 + 1), len(ids))
            start = max(0, t1 - 8)
            lp = _direct_logprobs(tiny_lm, ids[start:t1])
            total -= lp[t - start - 1, ids[t]].item()
            count += 1
    out = build_evaluator(f"x=lm-perplexity:{tmp_path / 't.txt'},max_length=8,stride=3")(tiny_lm)
    assert out["nll"] == pytest.approx(total / count, rel=1e-5)
    whole = build_evaluator(f"x=lm-perplexity:{tmp_path / 't.txt'},unit=file")
    assert len(whole.docs) == 1
    with pytest.raises(SgMergeError, match="stride"):
        build_evaluator(f"x=lm-perplexity:{tmp_path / 't.txt'},max_length=8,stride=8")(tiny_lm)


def test_response_windows_score_the_response_only_once_each() -> None:
    from mergekit_sg.evals.language import response_windows, windows

    prompt, response = [1, 2, 3], [4, 5, 6, 7, 8]
    assert response_windows(prompt, response, 16, 15) == [([1, 2, 3, 4, 5, 6, 7, 8], 5)]
    # 4-token windows scoring 2 new tokens each: the prompt is context, cut from the left
    assert response_windows(prompt, response, 4, 2) == [
        ([2, 3, 4, 5], 2),
        ([4, 5, 6, 7], 2),
        ([5, 6, 7, 8], 1),
    ]
    assert response_windows([], [4, 5, 6], 8, 7) == [([4, 5, 6], 2)]  # token 0 has no context
    assert response_windows([1, 2], [], 8, 7) == []
    assert windows([1, 2, 3], 8, 7) == [([1, 2, 3], 2)]  # documents: every token after the first


def test_perplexity_of_responses_given_their_prompts(tiny_lm, tmp_path: Path) -> None:
    """prompt=/response=: the loss counts the response's tokens only, each conditioned on the
    prompt (and, in windows, on as much of it as fits), against model(ids) one row at a time."""
    rng = random.Random(4)
    rows = [
        {"instruction": random_text(rng, rng.randint(1, 12)), "output": random_text(rng, n)}
        for n in (1, 3, 9, 5, 2, 7)
    ]
    path = tmp_path / "instruct.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = tiny_lm.tokenizer

    def direct(max_length: int, stride: int) -> float:
        total = count = 0.0
        for r in rows:
            p = tok(r["instruction"])["input_ids"]
            ids = p + tok(r["output"], add_special_tokens=False)["input_ids"]
            for t in range(len(p), len(ids)):  # target t is in window (t - len(p)) // stride
                t1 = min(len(p) + stride * ((t - len(p)) // stride + 1), len(ids))
                start = max(0, t1 - max_length)
                total -= _direct_logprobs(tiny_lm, ids[start:t1])[t - start - 1, ids[t]].item()
                count += 1
        assert count == sum(len(r["output"].split()) for r in rows)
        return total / count

    spec = f"generality.instructions=lm-perplexity:{path},prompt=instruction,response=output"
    ev = build_evaluator(spec + ",primary=probability,batch_size=4")
    assert ev.role == "generality" and ev.primary == "probability"
    assert "probability" not in ev.lower_is_better
    out = ev(tiny_lm)
    nll = direct(64, 63)
    assert out["nll"] == pytest.approx(nll, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert out["probability"] == pytest.approx(math.exp(-nll), rel=1e-5)
    windowed = build_evaluator(spec + ",max_length=6,stride=2")(tiny_lm)
    assert windowed["nll"] == pytest.approx(direct(6, 2), rel=1e-5)
    # the same text scored as whole documents is another number: prompts count there
    (tmp_path / "whole.jsonl").write_text(
        "".join(json.dumps({"text": f"{r['instruction']} {r['output']}"}) + "\n" for r in rows)
    )
    whole = build_evaluator(f"x=lm-perplexity:{tmp_path / 'whole.jsonl'}")(tiny_lm)
    assert abs(whole["nll"] - nll) > 1e-3
    with pytest.raises(SgMergeError, match="row 1 has no text field 'response'"):
        build_evaluator(f"x=lm-perplexity:{path},prompt=instruction")
    with pytest.raises(SgMergeError, match="field= and unit= are for plain documents"):
        build_evaluator(f"x=lm-perplexity:{path},response=output,field=output")


def test_multiple_choice_against_direct_loglikelihoods(tiny_lm, tmp_path: Path) -> None:
    rng = random.Random(3)
    qs = [
        (
            random_text(rng, rng.randint(2, 8)),
            [random_text(rng, rng.randint(1, 4)) for _ in range(4)],
        )
        for _ in range(5)
    ]
    tok = tiny_lm.tokenizer
    sums, means = [], []
    for q, choices in qs:
        ctx = tok(f"Question: {q}\nAnswer:")["input_ids"]
        s_row, m_row = [], []
        for c in choices:
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            lp = _direct_logprobs(tiny_lm, ctx + cont)
            s = sum(lp[len(ctx) + k - 1, t].item() for k, t in enumerate(cont))
            s_row.append(s)
            m_row.append(s / len(cont))
        sums.append(s_row)
        means.append(m_row)
    best = [int(np.argmax(s)) for s in sums]
    answers = [best[0], best[1], best[2], (best[3] + 1) % 4, (best[4] + 2) % 4]  # 3 of 5 right
    letters = "ABCD"
    rows = [
        {"question": qs[0][0], "choices": qs[0][1], "answer": answers[0]},
        {"question": qs[1][0], "choices": qs[1][1], "answer": letters[answers[1]]},
        {"question": qs[2][0], "choices": qs[2][1], "answer": qs[2][1][answers[2]]},
        {
            "question": qs[3][0],
            **dict(zip(("opa", "opb", "opc", "opd"), qs[3][1], strict=True)),
            "cop": answers[3],
        },
        {"question": qs[4][0], "choices": qs[4][1], "answer": answers[4]},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = build_evaluator(f"speciality=lm-multiple-choice:{path},batch_size=3")
    out = ev(tiny_lm)
    assert out["accuracy"] == 3 / 5
    norm = [int(np.argmax(m)) == a for m, a in zip(means, answers, strict=True)]
    assert out["accuracy_norm"] == sum(norm) / 5
    loss = -np.mean(
        [torch.tensor(s).log_softmax(0)[a].item() for s, a in zip(sums, answers, strict=True)]
    )
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": "E"}) + "\n")
    with pytest.raises(SgMergeError, match="row 1: answer 'E'"):
        build_evaluator(f"x=lm-multiple-choice:{bad}")


# ---- embedding similarity ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    from transformers import BertConfig, BertForSequenceClassification

    tok = word_tokenizer(["[CLS]", "[SEP]"], "[CLS] $A [SEP]")
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    root = tmp_path_factory.mktemp("enc")
    cls = BertForSequenceClassification(cfg)
    cls.save_pretrained(root / "cls")
    cls.bert.save_pretrained(root / "enc")
    for d in ("cls", "enc"):
        tok.save_pretrained(root / d)
    return {
        "enc": load_model("hf:encoder", root / "enc"),
        "cls": load_model("hf:seq-classification", root / "cls"),
    }


def _direct_embed(model: LoadedModel, text: str) -> torch.Tensor:
    enc = model.module if model.kind == "hf:encoder" else model.module.bert
    with torch.no_grad():
        hidden = enc(**model.tokenizer(text, return_tensors="pt")).last_hidden_state[0]
    return F.normalize(hidden.mean(0), dim=0)


def _pairs_file(tmp_path: Path) -> tuple[Path, list[tuple[str, str, float]]]:
    rng = random.Random(4)
    pairs = [
        (rng.choice(WORDS), random_text(rng, rng.randint(1, 3)), i * 0.37 % 10) for i in range(25)
    ]
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "# comment\nword1\tword2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs)
    )
    return path, pairs


@pytest.mark.parametrize("which", ["enc", "cls"])
def test_embedding_similarity_pairs_against_numpy(
    tiny_encoders, tmp_path: Path, which: str
) -> None:
    model = tiny_encoders[which]
    path, pairs = _pairs_file(tmp_path)
    ev = build_evaluator(f"generality=embedding-similarity:{path},batch_size=4")
    assert (ev.role, ev.primary) == ("generality", "spearman")
    out = ev(model)
    cos = np.array([float(_direct_embed(model, a) @ _direct_embed(model, b)) for a, b, _ in pairs])
    human = np.array([s for _, _, s in pairs])
    assert out["pearson"] == pytest.approx(np.corrcoef(cos, human)[0, 1], abs=1e-5)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties here)
    assert len(set(cos.round(6))) == len(cos) and len(set(human)) == len(human)
    assert out["spearman"] == pytest.approx(np.corrcoef(rank(cos), rank(human))[0, 1], abs=1e-9)


def test_embedding_similarity_follows_weight_changes(tiny_encoders, tmp_path: Path) -> None:
    """A scan moves weights in place: the next call sees them (tokens are cached, not features)."""
    model = tiny_encoders["enc"]
    path, pairs = _pairs_file(tmp_path)
    ev = build_evaluator(f"x=embedding-similarity:{path}")
    first = ev(model)
    saved = {k: v.clone() for k, v in model.module.state_dict().items()}
    try:
        with torch.no_grad():
            for p in model.module.parameters():
                p.mul_(1.5)
        second = ev(model)
        cos = np.array(
            [float(_direct_embed(model, a) @ _direct_embed(model, b)) for a, b, _ in pairs]
        )
        human = np.array([s for _, _, s in pairs])
        assert second["pearson"] == pytest.approx(np.corrcoef(cos, human)[0, 1], abs=1e-5)
        assert second["pearson"] != pytest.approx(first["pearson"], abs=1e-6)
    finally:
        model.module.load_state_dict(saved)


def test_embedding_classifier_kind_uses_its_encoder_and_label_names(
    tiny_encoders, tmp_path: Path
) -> None:
    from mergekit_sg.models import EmbeddingClassifier

    enc = tiny_encoders["enc"]
    torch.manual_seed(0)
    clf = EmbeddingClassifier(enc.module, ["fresh", "rotten"], scale=20.0).eval()
    torch.nn.init.normal_(clf.head.weight)
    model = LoadedModel(
        clf, "hf:embedding-classifier", "hf:embedding-classifier", enc.path, tokenizer=enc.tokenizer
    )
    path, _ = _pairs_file(tmp_path)
    ev = build_evaluator(f"x=embedding-similarity:{path}")
    assert ev(model) == pytest.approx(ev(enc), abs=1e-6)
    rng = random.Random(6)
    rows = [
        (random_text(rng, rng.randint(1, 12)), rng.choice(["fresh", "rotten"])) for _ in range(30)
    ]
    (tmp_path / "rt.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    out = build_evaluator(f"x=seq-classification:{tmp_path / 'rt.csv'}")(model)  # by clf.labels
    with torch.no_grad():
        preds = [
            clf.labels[int(clf(**enc.tokenizer(t, return_tensors="pt")).logits.argmax())]
            for t, _ in rows
        ]
    assert out["accuracy"] == sum(p == y for p, (_, y) in zip(preds, rows, strict=True)) / 30


def test_embedding_similarity_document_matrix(tiny_encoders, tmp_path: Path) -> None:
    model = tiny_encoders["enc"]
    rng = random.Random(5)
    docs = [random_text(rng, rng.randint(3, 30)) for _ in range(7)]
    m = np.array(rng.sample(range(100), 49), dtype=float).reshape(7, 7) / 100
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    np.savetxt(tmp_path / "sim.txt", m)
    ev = build_evaluator(
        f"g=embedding-similarity:{tmp_path / 'docs.txt'},matrix={tmp_path / 'sim.txt'}"
    )
    assert ev.primary == "pearson"
    out = ev(model)
    e = torch.stack([_direct_embed(model, d) for d in docs])
    iu = np.triu_indices(7, 1)
    cos = (e @ e.T).numpy()[iu]
    assert out["pearson"] == pytest.approx(np.corrcoef(cos, m[iu])[0, 1], abs=1e-5)
    np.savetxt(tmp_path / "bad.txt", m[:6])
    with pytest.raises(SgMergeError, match="7x7"):
        build_evaluator(
            f"g=embedding-similarity:{tmp_path / 'docs.txt'},matrix={tmp_path / 'bad.txt'}"
        )


def test_embedding_similarity_open_clip_text_tower(clip_pair, tmp_path: Path) -> None:
    name = register_tiny_clip()
    model = load_model(f"open_clip:{name}", clip_pair["pre"])
    path, pairs = _pairs_file(tmp_path)
    out = build_evaluator(f"x=embedding-similarity:{path}")(model)
    with torch.no_grad():

        def emb(t: str) -> torch.Tensor:
            return model.module.encode_text(model.tokenizer([t]), normalize=True)[0]

        cos = [float(emb(a) @ emb(b)) for a, b, _ in pairs]
    assert out["pearson"] == pytest.approx(pearson(cos, [s for *_, s in pairs]), abs=1e-5)


def test_real_minilm_lee_and_wordsim() -> None:
    """Properties of the pretrained all-MiniLM-L6-v2: measured Lee Pearson 0.656, wordsim353
    Spearman 0.729 (simlex999 Spearman 0.446, not run here for time)."""
    from mergekit_sg.commands import minilm_dir

    model = load_model("hf:encoder", minilm_dir())
    lee = build_evaluator("generality.lee=embedding-similarity:lee")(model)
    ws = build_evaluator("generality.ws=embedding-similarity:wordsim353")(model)
    assert lee["pearson"] == pytest.approx(0.656, abs=0.01) and lee["pearson"] > 0.3
    assert ws["spearman"] == pytest.approx(0.729, abs=0.01) and ws["spearman"] > 0.4


# ---- clip-zeroshot ----------------------------------------------------------------------------


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    images = {  # folder: colours of its images
        "red": [(255, 0, 0), (255, 160, 0)],  # orange: nearer yellow than red on the full head
        "green": [(0, 255, 0), (40, 0, 255)],  # a blue image filed as green: always wrong
        "blue": [(0, 0, 255), (0, 0, 200)],
    }
    for folder, rgbs in images.items():
        for i, rgb in enumerate(rgbs):
            colour_png(root / folder / f"{i}.png", rgb)
    (tmp_path / "head.txt").write_text("\n".join(COLOURS) + "\n")
    return root


def test_clip_zeroshot_known_answers_and_subset(colour_folder: Path, tmp_path: Path) -> None:
    model = LoadedModel(
        ColourClip(), "open_clip", "test", tmp_path, tokenizer=colour_tokens, preprocess=to_tensor
    )
    head = tmp_path / "head.txt"
    own = build_evaluator(f"speciality=clip-zeroshot:{colour_folder},batch_size=4")
    assert own.classnames == ["blue", "green", "red"] and own.primary == "top1"
    assert own(model)["top1"] == 5 / 6  # only the misfiled blue image is wrong
    full = build_evaluator(f"x=clip-zeroshot:{colour_folder},classes={head}")(model)
    assert full["top1"] == 4 / 6 and full["top5"] == 5 / 6  # misfiled blue ranks green 7th of 7
    (tmp_path / "subset.txt").write_text("4\ngreen\n1\n")  # dataset classes: blue, green, red
    sub_ev = build_evaluator(
        f"x=clip-zeroshot:{colour_folder},classes={head},subset={tmp_path / 'subset.txt'}"
    )
    sub = sub_ev(model)
    assert sub["top1"] == 5 / 6 and sub["top5"] == 1.0 and sub_ev.columns == [4, 3, 1]
    (tmp_path / "pairs.txt").write_text("red\t1\nblue\tblue\ngreen\t3\n")
    by_name = build_evaluator(
        f"x=clip-zeroshot:{colour_folder},classes={head},subset={tmp_path / 'pairs.txt'}"
    )
    assert by_name(model)["top1"] == 5 / 6
    # the loss: cross-entropy of 10 * cosine over the three competing colours
    feats = torch.tensor(
        [[1, 0, 0], [1, 160 / 255, 0], [0, 1, 0], [40 / 255, 0, 1], [0, 0, 1], [0, 0, 200 / 255]]
    )
    text = torch.tensor([COLOURS["red"], COLOURS["green"], COLOURS["blue"]], dtype=torch.float32)
    logits = 10 * F.normalize(feats, dim=-1) @ F.normalize(text, dim=-1).T
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    assert by_name(model)["loss"] == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)
    csv_path = tmp_path / "list.csv"
    files = sorted(colour_folder.rglob("*.png"))
    csv_path.write_text(
        "path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in files)
    )
    assert build_evaluator(f"x=clip-zeroshot:{csv_path},classes={head}")(model)["top1"] == 4 / 6


def test_clip_zeroshot_coop_keyed_class_names(tmp_path: Path) -> None:
    """CoOp's ImageNet classnames.txt (`n01440764 tench` lines) as classes=: the names form the
    head, the folders are matched by key, and a folder subset competes among its own classes."""
    root = tmp_path / "wnids"
    keys = {c: f"n{i:03d}" for i, c in enumerate(COLOURS)}
    images = {"red": [(255, 0, 0), (255, 160, 0)], "green": [(0, 255, 0), (40, 0, 255)]}
    images["blue"] = [(0, 0, 255), (0, 0, 200)]
    for colour, rgbs in images.items():
        for i, rgb in enumerate(rgbs):
            colour_png(root / keys[colour] / f"{i}.png", rgb)
    names = tmp_path / "classnames.txt"
    names.write_text("".join(f"{k} {c}\n" for c, k in keys.items()))
    model = LoadedModel(
        ColourClip(), "open_clip", "test", tmp_path, tokenizer=colour_tokens, preprocess=to_tensor
    )
    ev = build_evaluator(f"x=clip-zeroshot:{root},classes={names}")
    assert ev.classnames == list(COLOURS)  # the names, without their keys
    assert ev.columns == [1, 3, 4]  # red, green, blue: the folders' classes only
    assert ev(model)["top1"] == 5 / 6  # as the explicit subset mapping gives


def test_numeric_class_folders_sort_as_numbers(tmp_path: Path) -> None:
    """ImageNetV2's class-index folders 0..999: folder 10 is class 10, not the third."""
    from mergekit_sg.evals.clip_zeroshot import read_folder
    from mergekit_sg.tune.prompt import read_images

    for name, rgb in (("2", (0, 255, 0)), ("10", (0, 0, 255)), ("1", (255, 0, 0))):
        colour_png(tmp_path / "v2" / name / "a.png", rgb)
    assert read_folder(tmp_path / "v2").classes == ["1", "2", "10"]
    (tmp_path / "names.txt").write_text("red\ngreen\nblue\n")
    got = read_images(tmp_path / "v2", tmp_path / "names.txt")
    assert {
        p.parent.name: got.classnames[y] for p, y in zip(got.paths, got.labels, strict=True)
    } == {
        "1": "red",
        "2": "green",
        "10": "blue",
    }


def test_clip_zeroshot_errors(colour_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    with pytest.raises(SgMergeError, match="subset=FILE"):
        build_evaluator(f"x=clip-zeroshot:{colour_folder},classes={tmp_path / 'two.txt'}")
    (tmp_path / "t.txt").write_text("a photo\n")
    with pytest.raises(SgMergeError, match="needs \\{\\}"):
        build_evaluator(f"x=clip-zeroshot:{colour_folder},templates={tmp_path / 't.txt'}")
    with pytest.raises(SgMergeError, match="does not exist"):
        build_evaluator(f"x=clip-zeroshot:{tmp_path / 'nope'}")


def test_openai_templates_are_the_80_public_ones() -> None:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as REF

    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 == len(set(OPENAI_IMAGENET_TEMPLATES))
    assert list(OPENAI_IMAGENET_TEMPLATES) == [t("{}") for t in REF]


def test_clip_zeroshot_tiny_open_clip_against_open_clip(clip_pair, tmp_path: Path) -> None:
    from open_clip import build_zero_shot_classifier

    name = register_tiny_clip()
    model = load_model(f"open_clip:{name}", clip_pair["pre"])
    classes = ["red_apple", "sea", "night_sky"]
    paths, target = [], []
    for c, cls in enumerate(classes):
        for i in range(4):
            paths.append(
                colour_png(
                    tmp_path / "set" / cls / f"{i}.png",
                    (60 * c + 40, 90, 200 - 50 * c),
                    noise=60,
                    seed=10 * c + i,
                )
            )
            target.append(c)
    ev = build_evaluator(f"x=clip-zeroshot:{tmp_path / 'set'},batch_size=5")
    names = [c.replace("_", " ") for c in classes]
    t = torch.tensor(target)

    def direct() -> torch.Tensor:
        from PIL import Image

        with torch.no_grad():
            head = build_zero_shot_classifier(
                model.module, model.tokenizer, names, OPENAI_IMAGENET_TEMPLATES, None
            )
            pixels = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in paths])
            feats = model.module.encode_image(pixels, normalize=True)
            return model.module.logit_scale.exp() * feats @ head

    for _step in range(2):  # then move the weights in place, as a scan does: nothing stale
        out, logits = ev(model), direct()
        assert out["top1"] == pytest.approx((logits.argmax(1) == t).float().mean().item())
        assert out["top5"] == 1.0
        assert out["loss"] == pytest.approx(F.cross_entropy(logits, t).item(), rel=1e-4)
        perturb(model.module, seed=7, scale=0.05)
