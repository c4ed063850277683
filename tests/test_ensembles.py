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


# ---- prompts (CoOp / KgCoOp) on a tiny open_clip, in CoOp's dataset layout ---------------------

TEMPLATE = "a photo of a {}, a type of colour."


def _png(path: Path, label: int, seed: int) -> None:
    rgb = [(230, 30, 30), (30, 220, 30), (30, 30, 230), (220, 220, 30)][label % 4]
    colour_png(path, rgb, noise=50, seed=seed)


def coop_split(home: Path, stem: str, classes: list[str], per_class: int = 2) -> Path:
    """home/split_zhou_STEM.json ({"train"|"val"|"test": [[path, label, name], ...]}) with
    its images under home/images/, as CoOp lays a dataset out."""
    split: dict[str, list[list[object]]] = {}
    for s, name in enumerate(("train", "val", "test")):
        rows: list[list[object]] = []
        for y, cls in enumerate(classes):
            for i in range(per_class):
                rel = f"{cls}/{name}_{i}.png"
                _png(home / "images" / rel, y, 100 * s + 10 * y + i)
                rows.append([rel, y, cls])
        split[name] = rows
    path = home / f"split_zhou_{stem}.json"
    path.write_text(json.dumps(split))
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import open_clip
    from safetensors.torch import save_file

    name = register_tiny_clip()
    root = tmp_path_factory.mktemp("tinyclip")
    torch.manual_seed(0)
    clip = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, root / "clip.safetensors")
    js = coop_split(root / "pets", "Pets", ["red", "green", "blue", "yellow"], per_class=3)
    return {"model": f"open_clip:{name}", "clip": str(root / "clip.safetensors"), "split": str(js)}


def _coop_kwargs(c: dict[str, str], **kw: object) -> dict[str, object]:
    base = {
        "model": c["model"],
        "pretrained": c["clip"],
        "data": f"{c['split']}:train",
        "test_data": f"{c['split']}:test",
        "shots": 2,
        "batch_size": 8,
        "epochs": 2,
        "lr": 0.05,
        "device": "cpu",
        "log_every": 1,
    }
    return {**base, **kw}


def test_kgcoop_term_is_its_closed_form_and_weight_zero_is_coop(tiny_clip, tmp_path: Path) -> None:
    from mergekit_sg.tune import coop
    from mergekit_sg.tune.prompt import load_prompt, read_prompt

    kg = coop(tmp_path / "kg", **_coop_kwargs(tiny_clip, augment=False, batch_size=64),
              kg_weight=8.0, zs_template=TEMPLATE, save_init=str(tmp_path / "init"))  # fmt: skip
    first = next(r for r in kg.log if r["type"] == "step")
    init = load_prompt(tmp_path / "init")  # the context of the first step
    names = init.meta["classnames"]
    with torch.no_grad():  # 1 - mean_c cos(T(w)_c, T_zs_c), in float64 by hand
        t_w = init.text_features(names).double()
        tokens = init.loaded.tokenizer([TEMPLATE.format(n) for n in names])
        t_zs = init.clip.encode_text(tokens).double()
    cos = (t_w * t_zs).sum(-1) / (t_w.norm(dim=-1) * t_zs.norm(dim=-1))
    assert first["kg"] == pytest.approx(1 - cos.mean().item(), rel=1e-5, abs=1e-7)
    assert first["loss"] == pytest.approx(first["main"] + 8.0 * first["kg"], rel=1e-6)
    plain = coop(tmp_path / "coop", **_coop_kwargs(tiny_clip))
    zero = coop(tmp_path / "kg0", **_coop_kwargs(tiny_clip), kg_weight=0.0, zs_template=TEMPLATE)
    assert torch.equal(read_prompt(plain.out)[0], read_prompt(zero.out)[0])  # bit-identical
    assert plain.test == zero.test
    strip = [{k: v for k, v in r.items() if k not in ("config", "options")} for r in plain.log]
    assert [r.get("loss") for r in strip] == [r.get("loss") for r in zero.log]


def test_prompt_scan_ensembled_with_the_zero_shot_prompt(tiny_clip, tmp_path: Path) -> None:
    from mergekit_sg.path.run import scan
    from mergekit_sg.tune import coop
    from mergekit_sg.tune.prompt import prompt_eval, prompt_model

    run = coop(tmp_path / "coop", **_coop_kwargs(tiny_clip), save_init=str(tmp_path / "zs"))
    data = f"{tiny_clip['split']}:test"
    evals = [
        f"speciality=python:mergekit_sg.tune.prompt:prompt_eval,data={data},classes=base",
        f"generality=python:mergekit_sg.tune.prompt:prompt_eval,data={data},classes=novel",
    ]
    rep = scan(tmp_path / "zs", run.out, None, model="python:mergekit_sg.tune.prompt:prompt_model",
               eval=evals, alphas="0.5", ensemble="probs")  # fmt: skip
    zs, ft = prompt_model(tmp_path / "zs"), prompt_model(run.out)
    for point, model in ((rep.result.outputs[0], zs), (rep.result.outputs[2], ft)):
        got = {k: v for k, v in point.metrics["speciality"].items() if k != "seconds"}
        assert got == prompt_eval(model, data, classes="base")
    (l0, y), (l1, _) = (prompt_eval.outputs(m, data, classes="novel") for m in (zs, ft))
    p = 0.5 * l0.double().softmax(-1) + 0.5 * l1.double().softmax(-1)
    got = rep.result.outputs[1].metrics["generality"]
    assert got["accuracy"] == pytest.approx(
        (p.argmax(-1) == torch.tensor(y)).double().mean().item()
    )
    assert got["loss"] == pytest.approx(-p[torch.arange(len(y)), y].log().mean().item(), rel=1e-5)


# ---- the protocol recipes, end to end on CoOp-laid-out synthetic datasets ----------------------


def _coop_data(root: Path, recipe: dict) -> None:
    """Every dataset a recipe names, made under root as CoOp lays it out (3-4 classes each)."""
    names = ["red", "green", "blue", "yellow"]
    wnids = [f"n0{i}" for i in range(4)]
    (root / "imagenet").mkdir(parents=True, exist_ok=True)
    (root / "imagenet" / "classnames.txt").write_text(
        "".join(f"{w} {n}\n" for w, n in zip(wnids, names, strict=True))
    )

    def wnid_folder(folder: Path, keep: int, per_class: int) -> None:
        for y, w in enumerate(wnids[:keep]):
            for i in range(per_class):
                _png(folder / w / f"{i}.png", y, 7 * y + i)

    o = recipe["options"]
    for ds in o["datasets"]:
        refs = [ds["data"], ds.get("test_data") or ""]
        refs += [s["data"] for s in ds.get("shifts", {}).values()]
        for ref in refs:
            path = ref.replace("${COOP_DATA}", str(root))
            p = Path(path.split(".json:")[0] + ".json") if ".json:" in path else Path(path)
            if p.exists() or not ref:
                continue
            if p.suffix == ".json":
                coop_split(p.parent, p.stem.removeprefix("split_zhou_"), names[:3])
            elif p.name.startswith("images_variant_"):
                p.parent.mkdir(parents=True, exist_ok=True)
                (p.parent / "variants.txt").write_text("707-320\nA300B4\nF/A-18\n")
                lines = []
                for y, v in enumerate(["707-320", "A300B4", "F/A-18"]):
                    for i in range(2):
                        _png(p.parent / "images" / f"{y}{i}.jpg", y, 3 * y + i)
                        lines.append(f"{y}{i} {v}")
                for split in ("train", "val", "test"):
                    (p.parent / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
            else:  # ImageNet's wnid folders; -A and -R hold some of its classes
                keep = 3 if p.name in ("imagenet-a", "imagenet-r") else 4
                wnid_folder(p, keep, 4 if p.name == "train" else 2)


def _protocol(recipe_file: str, tiny_clip: dict[str, str], tmp_path: Path):
    import yaml

    from mergekit_sg.commands import parse_recipe, run_recipe

    data = yaml.safe_load((Path(__file__).parent.parent / "recipes" / recipe_file).read_text())
    _coop_data(tmp_path / "coop", data)
    fast = {"epochs": 1, "batch_size": 16}
    data["options"].update(
        model=tiny_clip["model"], pretrained=tiny_clip["clip"], seeds=[1], shots=2, device="cpu",
        coop=fast, mergetune={**fast, "num_points": 2},
    )  # fmt: skip
    env = {"COOP_DATA": str(tmp_path / "coop"), "BENCH_OUT": str(tmp_path / "bench")}
    run_recipe(parse_recipe(data, environ=env))
    return data, json.loads((tmp_path / "bench" / "summary.json").read_text())


ROWS = [
    "zero-shot", "init-prompt", "coop", "mergetune", "kgcoop", "kgcoop+mergetune",
    "coop + zero-shot", "mergetune + zero-shot", "kgcoop + zero-shot",
    "kgcoop+mergetune + zero-shot",
]  # fmt: skip


def _table(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if "---" not in ln]


def test_cross_dataset_recipe_end_to_end(tiny_clip, tmp_path: Path) -> None:
    data, summary = _protocol("coop-cross-dataset.yaml", tiny_clip, tmp_path)
    targets = list(data["options"]["datasets"][0]["shifts"])
    assert len(targets) == 10 and list(summary) == ["ImageNet"]
    assert list(summary["ImageNet"]) == ROWS
    for row in ROWS:
        assert set(summary["ImageNet"][row]) == {"test.all", *(f"{t}.all" for t in targets)}
    table = _table(tmp_path / "bench" / "table.md")
    assert table[0] == ["model", "ImageNet", *targets, "average (targets)"]
    assert [r[0] for r in table[1:]] == ROWS
    s = summary["ImageNet"]["coop"]
    avg = 100 * sum(s[f"{t}.all"] for t in targets) / 10
    assert float(table[3][-1]) == pytest.approx(avg, abs=0.006)
    assert all(c != "-" for r in table[1:] for c in r)


def test_domain_generalisation_recipe_end_to_end(tiny_clip, tmp_path: Path) -> None:
    _, summary = _protocol("coop-domain-generalisation.yaml", tiny_clip, tmp_path)
    sets = ["imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r"]
    assert list(summary["ImageNet"]) == ROWS
    table = _table(tmp_path / "bench" / "table.md")
    assert table[0] == ["model", "ImageNet", *sets, "average (targets)"]
    assert [r[0] for r in table[1:]] == ROWS and all(c != "-" for r in table[1:] for c in r)
    # the ensemble rows are the mixture of the zero-shot and the prompt's probabilities, so
    # scoring goes through both; and zero-shot uses the template on every set
    assert (tmp_path / "bench" / "table.csv").read_text().count("\n") == len(ROWS) + 1


def test_base_to_novel_table_has_base_novel_hm_and_averages(tmp_path: Path) -> None:
    from mergekit_sg.tune.mergetuning.benchmark import paper_table

    summary = {
        "A": {"coop": {"test.all": 0.5, "test.base": 0.8, "test.novel": 0.6, "test.hm": 0.6857}},
        "B": {"coop": {"test.all": 0.5, "test.base": 0.6, "test.novel": 0.4, "test.hm": 0.48}},
    }
    header, rows = paper_table(summary)
    assert header == [
        "model", "A base", "A novel", "A HM", "B base", "B novel", "B HM",
        "average base", "average novel", "average HM",
    ]  # fmt: skip
    assert rows[0][-3:] == pytest.approx([70.0, 50.0, 2 * 70 * 50 / 120])


def test_numeric_folders_with_coop_keyed_class_names(tmp_path: Path) -> None:
    """ImageNetV2's 0..999 class-index folders read with CoOp's `wnid name` classnames.txt (as
    the domain-generalisation recipe does): the names lose their wnids."""
    from mergekit_sg.tune.prompt import read_images

    names = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark"}
    (tmp_path / "classnames.txt").write_text("".join(f"{k} {v}\n" for k, v in names.items()))
    for y in range(3):
        _png(tmp_path / "v2" / str(y) / "0.png", y, y)
    got = read_images(tmp_path / "v2", tmp_path / "classnames.txt")
    assert got.classnames == list(names.values()) and got.labels == [0, 1, 2]
