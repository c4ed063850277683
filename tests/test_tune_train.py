"""`finetune` and `fisher` end to end on tiny models: the loss goes down, the output loads and
interpolates with --save-init, a resumed run ends where an uninterrupted one does, the
regularisers hold the weights near theta0, LoRA is merged back, causal-LM prompts are masked,
the open_clip head is the zero-shot head, and the Fisher file matches brute force."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import main_rc as _cli
from safetensors import safe_open
from safetensors.torch import load_file
from tunekit import (
    bert_with_tokenizer,
    image_folder,
    llama_with_tokenizer,
    sentiment_rows,
    write_csv,
)

from mergekit_sg import interpolate
from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals import BaseEvaluator
from mergekit_sg.models import load_model
from mergekit_sg.tune import compute_fisher, finetune, state_dir
from mergekit_sg.tune.tasks import IGNORE, encode_lm


@pytest.fixture(scope="module")
def bert(bert_pair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tune_bert")
    return {
        "pre": bert_with_tokenizer(bert_pair["pre"], root / "pre"),
        "train": write_csv(root / "train.csv", sentiment_rows(48, seed=0)),
        "test": write_csv(root / "test.csv", sentiment_rows(32, seed=1)),
    }


def _common(bert: dict[str, Path], **kw) -> dict:
    base = dict(
        model="hf:seq-classification",
        pretrained=str(bert["pre"]),
        data=str(bert["train"]),
        labels="neg,pos",
        epochs=2,
        batch_size=8,
        lr=1e-2,
        max_length=16,
        log_every=1,
    )
    return {**base, **kw}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_finetune_reduces_loss_writes_checkpoint_log_and_init(bert, tmp_path: Path) -> None:
    ev = f"speciality=seq-classification:{bert['test']},labels=neg+pos"
    res = finetune(
        tmp_path / "ft", **_common(bert, epochs=4, save_init=str(tmp_path / "init"), eval=[ev])
    )
    steps = [r for r in res.log if r["type"] == "step"]
    assert len(steps) == res.steps == 4 * 6
    assert sum(r["task_loss"] for r in steps[-3:]) < sum(r["task_loss"] for r in steps[:3])
    assert res.evals[-1]["metrics"]["speciality"]["accuracy"] > 0.8
    log = [json.loads(ln) for ln in (tmp_path / "ft" / "train_log.jsonl").read_text().splitlines()]
    # the model before training is evaluated first (epoch 0), so a fine-tune that hurts shows
    assert [r["type"] for r in log][:3] == ["config", "eval", "step"] and log[-1]["type"] == "done"
    assert log[1]["epoch"] == 0 and res.evals[0]["epoch"] == 0 and len(res.evals) == 5
    assert res.regression() is None  # accuracy went up
    assert log[0]["steps"] == 24 and log[0]["regulariser"] == {"kind": "none"}
    # the output is a plain checkpoint with the init's keys; both load and interpolate
    ft, init = _weights(tmp_path / "ft"), _weights(tmp_path / "init")
    assert set(ft) == set(init) and all(ft[k].shape == init[k].shape for k in ft)
    loaded = load_model("hf:seq-classification", tmp_path / "ft")
    assert loaded.module.config.id2label == {0: "neg", 1: "pos"}
    mid = interpolate(tmp_path / "init", tmp_path / "ft", tmp_path / "mid", alpha=0.5).out
    merged = _weights(mid)
    k = "classifier.weight"
    torch.testing.assert_close(merged[k], 0.5 * (init[k] + ft[k]))
    assert not state_dir(tmp_path / "ft").exists()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(bert, tmp_path: Path) -> None:
    opts = _common(bert, grad_accum=2, checkpoint_every=2, epochs=2, group_by_length=True)
    finetune(tmp_path / "whole", **opts)

    def stop(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "cut", on_step=stop, **opts)
    assert not (tmp_path / "cut").exists() and (state_dir(tmp_path / "cut") / "state.pt").exists()
    res = finetune(tmp_path / "cut", **opts)
    assert res.resumed_at_step == 2
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    other = tmp_path / "other"
    state_dir(other).mkdir()
    torch.save({"fingerprint": "from other options"}, state_dir(other) / "state.pt")
    with pytest.raises(SgMergeError, match="different options"):
        finetune(other, **opts)


@dataclass
class Scripted(BaseEvaluator):
    """Returns scripted values epoch after epoch and keeps the weights it saw."""

    values: list[float] = field(default_factory=list)
    seen: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __call__(self, model) -> dict[str, float]:
        self.seen.append({k: v.clone() for k, v in model.module.state_dict().items()})
        return {"value": self.values[len(self.seen) - 1]}


def test_save_best_keeps_the_best_epoch(bert, tmp_path: Path) -> None:
    # epoch 0 (before training) is evaluated too, but never "best": it is not a fine-tune
    ev = Scripted("speciality.scripted", "speciality", "value", values=[0.95, 0.5, 0.9, 0.7])
    res = finetune(tmp_path / "ft", evaluators=[ev], **_common(bert, epochs=3, save="best"))
    assert res.best_epoch == 2 and [r["epoch"] for r in res.evals] == [0, 1, 2, 3]
    saved = _weights(tmp_path / "ft")
    assert all(torch.equal(saved[k], ev.seen[2][k]) for k in saved)
    assert not all(torch.equal(saved[k], ev.seen[3][k]) for k in saved)
    assert res.regression() is not None  # 0.9 after vs 0.95 before: said plainly


def test_each_regulariser_holds_its_own_distance_down(bert, tmp_path: Path) -> None:
    """With weight 0 a run only measures its penalty; with weight W the penalty stays lower."""
    fisher = compute_fisher(
        tmp_path / "f.safetensors",
        model="hf:seq-classification",
        pretrained=str(bert["pre"]),
        data=str(bert["train"]),
        labels="neg,pos",
        max_length=16,
    )
    assert fisher.method == "loop"  # transformers' mask code cannot be vmapped
    cases = (
        ("l1", 0.1, {}),
        ("l2", 10.0, {"reg_reduction": "sum"}),
        ("ewc", 1e3, {"fisher": str(fisher.out)}),
        ("kd", 10.0, {"kd_temperature": 2.0}),
    )
    for reg, weight, extra in cases:
        last = {}
        for w in (0.0, weight):
            res = finetune(
                tmp_path / f"{reg}-{w}", **_common(bert, epochs=1, reg=reg, reg_weight=w, **extra)
            )
            steps = [r for r in res.log if r["type"] == "step"]
            assert all(r["reg"] == reg and r["reg_weight"] == w for r in steps)
            first = steps[0]
            assert first["loss"] == pytest.approx(first["task_loss"] + first["reg_term"])
            last[w] = steps[-1]["reg_value"]
        assert last[weight] < 0.5 * last[0.0], (reg, last)
    config = json.loads((tmp_path / "l2-10.0" / "train_log.jsonl").read_text().splitlines()[0])
    assert config["regulariser"]["reduction"] == "sum" and config["regulariser"]["elements"] > 0


def test_fisher_file_matches_brute_force(bert, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    res = compute_fisher(
        tmp_path / "f.safetensors",
        model="hf:seq-classification",
        pretrained=str(bert["pre"]),
        data=str(bert["train"]),
        labels="neg,pos",
        max_length=16,
        samples=6,
        seed=3,
    )
    stored = load_file(res.out)
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(
        bert["pre"], num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    ).eval()
    tok = AutoTokenizer.from_pretrained(bert["pre"])
    import random

    rows = sentiment_rows(48, seed=0)
    idx = sorted(random.Random(3).sample(range(48), 6))
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in idx:
        text, label = rows[i]
        b = tok(text, truncation=True, max_length=16, return_tensors="pt")
        model.zero_grad()
        torch.log_softmax(model(**b).logits, -1)[0, int(label == "pos")].backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                acc[n] += p.grad**2
    assert set(stored) == set(acc)
    for n in acc:
        torch.testing.assert_close(stored[n], acc[n] / 6, rtol=1e-4, atol=1e-10)


def test_embedding_classifier_lora_on_real_minilm(tmp_path: Path) -> None:
    from mergekit_sg.commands import minilm_dir

    rows = [
        ("a moving, beautiful triumph", "fresh"),
        ("dull, boring and far too long", "rotten"),
    ] * 8
    data = write_csv(tmp_path / "rt.csv", rows)
    res = finetune(
        tmp_path / "ft",
        model="hf:embedding-classifier",
        pretrained=str(minilm_dir()),
        data=str(data),
        labels="rotten,fresh",
        zeroshot_head="a bad movie,a good movie",
        head_scale=20,
        epochs=1,
        batch_size=8,
        lr=1e-3,
        max_length=32,
        lora_rank=4,
        save_init=str(tmp_path / "init"),
    )
    config = res.log[0]
    assert config["lora"] == {"rank": 4, "alpha": 8}
    assert config["trainable_params"] < 100_000  # adapters on query/value plus the head
    ft, init = _weights(tmp_path / "ft"), _weights(tmp_path / "init")
    assert set(ft) == set(init)
    changed = {k for k in ft if not torch.equal(ft[k], init[k])}
    assert changed and all(
        (("query" in k or "value" in k) and k.endswith(".weight")) or k == "head.weight"
        for k in changed
    )
    model = load_model("hf", tmp_path / "ft")
    assert model.kind == "hf:embedding-classifier" and model.module.labels == ["rotten", "fresh"]


def test_causal_lm_masks_the_prompt_and_trains(llama_pair, tmp_path: Path) -> None:
    pre = llama_with_tokenizer(llama_pair["pre_f32"], tmp_path / "pre")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pre)
    ids, labels = encode_lm(tok, "is the film good ?", "good", True, 64)
    n_prompt = len(tok("is the film good ?")["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    rows = [
        {"prompt": f"is the {w} film good ?", "completion": "good" if i % 2 else "bad"}
        for i, w in enumerate(["very", "quite", "dull", "fine"] * 4)
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = finetune(
        tmp_path / "ft",
        model="hf:causal-lm",
        pretrained=str(pre),
        data=str(data),
        epochs=3,
        batch_size=4,
        lr=3e-3,
        reg="kd",
        reg_weight=0.1,
        kd_temperature=2.0,
        log_every=1,
    )
    steps = [r for r in res.log if r["type"] == "step"]
    assert steps[0]["reg_value"] == pytest.approx(0.0, abs=1e-6)  # student = teacher at start
    assert steps[-1]["task_loss"] < steps[0]["task_loss"]
    assert load_model("hf:causal-lm", tmp_path / "ft").module.config.vocab_size == 96


def test_open_clip_zero_shot_head_and_finetune(clip_pair, tmp_path: Path) -> None:
    import open_clip
    import torch.nn.functional as F
    from helpers import TINY_CLIP

    from mergekit_sg.models.clip_classifier import HEAD_WEIGHTS

    images = image_folder(tmp_path / "imgs")
    spec = f"open_clip:{TINY_CLIP}"
    res = finetune(
        tmp_path / "ft",
        model=spec,
        pretrained=str(clip_pair["pre"]),
        data=str(images),
        zeroshot_head="a photo of a {}.,a picture of a {}.",
        epochs=1,
        batch_size=4,
        save_init=str(tmp_path / "init"),
        reg="kd",
        reg_weight=1.0,
    )
    assert res.log[0]["weight_decay"] == 0.1 and res.log[0]["lr"] == 3e-5  # WiSE-FT defaults
    clip = load_model(spec, clip_pair["pre"]).module
    tok = open_clip.get_tokenizer(TINY_CLIP)
    with torch.no_grad():
        rows = []
        for c in ("cat", "dog"):
            e = F.normalize(
                clip.encode_text(tok([f"a photo of a {c}.", f"a picture of a {c}."])), dim=-1
            )
            rows.append(F.normalize(e.mean(0), dim=-1))
        want = torch.stack(rows) * clip.logit_scale.exp()
    head0 = load_file(tmp_path / "init" / HEAD_WEIGHTS)["head.weight"]
    torch.testing.assert_close(head0, want, rtol=1e-5, atol=1e-5)
    ft = load_model(spec, tmp_path / "ft").module.state_dict()
    init = load_model(spec, tmp_path / "init").module.state_dict()
    moved = [k for k in ft if not torch.equal(ft[k], init[k])]
    # the folders load as classifiers (CLIP under clip., the head beside it); text tower frozen
    assert moved and all(k.startswith("clip.visual.") or k == "head.weight" for k in moved)


def test_option_errors_are_one_line(bert, tmp_path: Path) -> None:
    with pytest.raises(SgMergeError, match="--reg l2 needs --reg-weight"):
        finetune(tmp_path / "a", **_common(bert, reg="l2"))
    with pytest.raises(SgMergeError, match="--reg ewc needs --fisher"):
        finetune(tmp_path / "a", **_common(bert, reg="ewc", reg_weight=1.0))
    with pytest.raises(SgMergeError, match="LoRA"):
        finetune(tmp_path / "a", **_common(bert, reg="l1", reg_weight=1.0, lora_rank=2))
    with pytest.raises(SgMergeError, match="--save best needs"):
        finetune(tmp_path / "a", **_common(bert, save="best"))
    with pytest.raises(SgMergeError, match="--lr"):
        finetune(tmp_path / "a", **_common(bert, lr=-1))
    assert not (tmp_path / "a").exists()


def test_cli_fisher_finetune_ewc_and_fisher_interpolate(bert, tmp_path: Path, capsys) -> None:
    common = ["--model", "hf:seq-classification", "--pretrained", str(bert["pre"])]
    common += ["--data", str(bert["train"]), "--labels", "neg,pos", "--max-length", "16"]
    assert _cli("fisher", *common, "-o", str(tmp_path / "f0.safetensors"), "--samples", "8") == 0
    assert "over 8 examples" in capsys.readouterr().out
    from mergekit_sg.commands.run import load_recipe  # the plain run's recipe, beside the file

    side = tmp_path / "f0.safetensors.sgmerge_recipe.yaml"
    assert load_recipe(side).command.name == "fisher" and "--samples" not in side.read_text()
    assert "samples: 8" in side.read_text()
    code = _cli(
        "finetune",
        *common,
        "--reg",
        "ewc",
        "--reg-weight",
        "100",
        "--fisher",
        str(tmp_path / "f0.safetensors"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "1e-2",
        "--save-init",
        str(tmp_path / "init"),
        "-o",
        str(tmp_path / "ft"),
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "finetune: epoch 1/1, step " in err and "ETA" in err  # plain lines off a terminal
    assert (tmp_path / "ft" / "train_log.jsonl").exists() and (tmp_path / "init").is_dir()
    assert _cli("finetune", *common, "--reg", "ewc", "-o", str(tmp_path / "bad")) == 2
    err = capsys.readouterr().err
    assert "--reg ewc needs --reg-weight" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "bad").exists()
    fishers = f"{tmp_path / 'f0.safetensors'},{tmp_path / 'f0.safetensors'}"
    code = _cli(
        "interpolate",
        str(tmp_path / "init"),
        str(tmp_path / "ft"),
        "--alpha",
        "0.5",
        "--fisher",
        fishers,
        "-o",
        str(tmp_path / "fm"),
        "-q",
    )
    assert code == 0, capsys.readouterr().err
    with safe_open(tmp_path / "fm" / "model.safetensors", "pt") as f:
        recipe = json.loads(f.metadata()["sgmerge.recipe"])
    assert recipe["method"] == "fisher" and len(recipe["fisher"]) == 2
