"""CoOp and MERGETUNE end to end on a tiny random-init open_clip CLIP and synthetic PNG folders:
the training code reproduces the objective's identities at initialisation, only the trainable
part moves, training lowers the loss, prompts reload to the same evaluation, head mode uses the
given Fisher, subset mode works through functional_call, and CPU runs repeat exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import register_tiny_clip
from safetensors.torch import load_file, save_file

from mergekit_sg.errors import SgMergeError

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("torchvision")

CLASSES = ("cat", "dog", "bird", "fish")  # base: cat, dog (sorted: bird, cat | dog, fish)
TEMPLATE = "a photo of a {}, a type of pet."


def _pngs(root: Path, per_class: int, seed: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((40, 40, 3), dtype=np.float32)
            base[..., c % 3] = 90 + 60 * (c // 3)
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype("uint8")
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    name = register_tiny_clip()
    root = tmp_path_factory.mktemp("mergetune")
    torch.manual_seed(0)
    clip = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, root / "clip.safetensors")
    return {
        "root": root,
        "model": f"open_clip:{name}",
        "clip": str(root / "clip.safetensors"),
        "train": str(_pngs(root / "train", 6, 0)),
        "test": str(_pngs(root / "test", 3, 1)),
    }


def _common(s: dict, **kw: object) -> dict:
    base = {
        "model": s["model"],
        "pretrained": s["clip"],
        "data": s["train"],
        "test_data": s["test"],
        "shots": 4,
        "base_classes": True,
        "batch_size": 8,
        "device": "cpu",
        "seed": 1,
    }
    return {**base, **kw}


@pytest.fixture(scope="module")
def coop_run(setup):
    from mergekit_sg.tune import coop

    root = setup["root"]
    opts = _common(setup, epochs=3, lr=0.05, log_every=1, save_init=str(root / "init"))
    res = coop(root / "coop", **opts)
    return res


def _train_images(setup):
    """The base-class few-shot set that training uses (seed 1, 4 shots)."""
    from mergekit_sg.tune.prompt import read_images, sample_shots, split_classes

    return sample_shots(split_classes(read_images(setup["train"]), "base"), 4, 1)[0]


def test_coop_writes_prompt_log_and_base_novel_accuracy(setup, coop_run) -> None:
    import json

    out = coop_run.out
    assert {p.name for p in out.iterdir()} >= {"prompt.safetensors", "prompt.json", "coop.json"}
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["classnames"] == sorted(CLASSES) and meta["n_ctx"] == 4
    assert meta["init"] == "a photo of a" and meta["trained_on"] == "base"
    t = coop_run.test
    assert set(t) == {"all", "base", "novel", "hm"}
    assert t["hm"] == pytest.approx(2 * t["base"] * t["novel"] / (t["base"] + t["novel"]))
    steps = [r for r in coop_run.log if r["type"] == "step"]
    # one step per epoch: the constant warm-up epoch, then cosine from lr over the other two
    assert [r["lr"] for r in steps] == pytest.approx([1e-5, 0.05, 0.025])
    init_ctx = load_file(coop_run.init / "prompt.safetensors")["ctx"]
    from mergekit_sg.models import load_model

    clip = load_model(setup["model"], setup["clip"])
    want = clip.module.token_embedding(clip.tokenizer(["a photo of a cat."]))[0, 1:5]
    torch.testing.assert_close(init_ctx, want.detach())  # the zero-shot prompt's words


def test_at_init_every_path_point_is_the_finetuned_model(setup, coop_run, monkeypatch) -> None:
    """Through the training loop: the first step's L_lmc and L_main are the fine-tuned prompt's
    cross-entropy on the batch, and L_zs is 1 - cos(T(w2), T_zs); no gradient reaches CLIP."""
    from mergekit_sg.models import template_features
    from mergekit_sg.tune import mergetune
    from mergekit_sg.tune.mergetuning import cosine_surrogate
    from mergekit_sg.tune.mergetuning import prompt_mode as mt
    from mergekit_sg.tune.prompt import evaluate, load_prompt

    seen = {}
    real = mt.load_model

    def spy(*a, **k):
        seen["clip"] = real(*a, **k)
        return seen["clip"]

    monkeypatch.setattr(mt, "load_model", spy)
    res = mergetune(
        setup["root"] / "mt-init",
        **_common(setup, finetuned=str(coop_run.out), augment=False, batch_size=64, epochs=1),
        zs_template=TEMPLATE,
        log_every=1,
    )
    first = next(r for r in res.log if r["type"] == "step")
    ft = load_prompt(coop_run.out)
    images = _train_images(setup)  # one batch holds all of them
    ce_ft = evaluate(ft, images)["loss"]
    assert first["lmc"] == pytest.approx(ce_ft, rel=1e-5)
    assert first["main"] == pytest.approx(ce_ft, rel=1e-5)
    with torch.no_grad():
        t_zs = template_features(ft.clip, ft.loaded.tokenizer, images.classnames, TEMPLATE)
        zs = cosine_surrogate(ft.text_features(images.classnames), t_zs)
    assert first["zs"] == pytest.approx(float(zs), rel=1e-5)
    assert first["loss"] == pytest.approx(first["main"] + 10 * first["zs"] + first["lmc"], 1e-5)
    clip = seen["clip"].module
    assert all(p.grad is None and not p.requires_grad for p in clip.parameters())
    fresh = load_file(setup["clip"])
    assert all(torch.equal(t, fresh[n]) for n, t in clip.state_dict().items())


def test_a_few_steps_reduce_the_loss(setup, coop_run) -> None:
    from mergekit_sg.tune import mergetune

    res = mergetune(
        setup["root"] / "mt-steps",
        **_common(setup, finetuned=str(coop_run.out), augment=False, batch_size=64, epochs=8),
        warmup_epochs=0,
        lr=3e-4,
        log_every=1,
        val_shots=0,
    )
    losses = [r["loss"] for r in res.log if r["type"] == "step"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    ctx = load_file(res.out / "prompt.safetensors")["ctx"]
    assert not torch.equal(ctx, load_file(coop_run.out / "prompt.safetensors")["ctx"])


def test_saved_prompt_reloads_and_reproduces_the_evaluation(setup, coop_run) -> None:
    from mergekit_sg.path import lmc
    from mergekit_sg.tune.prompt import evaluate, load_prompt, read_images, split_accuracy

    pm = load_prompt(coop_run.out)
    test = read_images(setup["test"])
    assert split_accuracy(pm, test, True) == coop_run.test  # bit for bit, as trained
    # the prompt as a live model in `sgmerge lmc`: the path's endpoints are the saved prompts
    ev = f"base=python:mergekit_sg.tune.prompt:prompt_eval,data={setup['test']},classes=base"
    rep = lmc(
        [coop_run.init, coop_run.out],
        None,
        model="python:mergekit_sg.tune.prompt:prompt_model",
        eval=[ev],
        alphas="0,0.5,1",
    )
    from mergekit_sg.tune.prompt import split_classes

    base = split_classes(test, "base")
    at1 = rep.paths[0].at(1.0).metrics["base"]
    assert at1 == evaluate(pm, base)
    assert at1["accuracy"] == coop_run.test["base"]
    at0 = rep.paths[0].at(0.0).metrics["base"]
    assert at0 == evaluate(load_prompt(coop_run.init), base)


def test_cpu_runs_repeat_exactly_with_a_seed(setup, coop_run) -> None:
    from mergekit_sg.tune import mergetune

    outs = []
    for i in range(2):
        res = mergetune(
            setup["root"] / f"mt-repeat{i}",
            **_common(setup, finetuned=str(coop_run.out), epochs=2, batch_size=4),
            points="random",
            warmup_epochs=0,
        )
        outs.append(load_file(res.out / "prompt.safetensors")["ctx"])
    assert torch.equal(outs[0], outs[1])


# ---- head and subset modes on the tiny open_clip classifier (image tower + linear head) ----


@pytest.fixture(scope="module")
def clip_head_pair(setup):
    """A zero-shot classifier and its fine-tune (image tower and head), as sgmerge finetune
    writes them."""
    from mergekit_sg.tune import finetune

    root = setup["root"]
    finetune(
        root / "head-ft",
        model=setup["model"],
        pretrained=setup["clip"],
        data=setup["train"],
        zeroshot_head="a photo of a {}.",
        epochs=2,
        batch_size=8,
        lr=1e-3,
        save_init=str(root / "head-zs"),
        device="cpu",
    )
    return root / "head-zs", root / "head-ft"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    out = load_file(path / "open_clip_model.safetensors")
    out.update(load_file(path / "classifier_head.safetensors"))
    return out


def _head_run(setup, pair, name: str, **kw: object):
    from mergekit_sg.tune import mergetune

    ft = pair[1]
    opts = {
        "model": setup["model"],
        "pretrained": setup["clip"],
        "finetuned": str(ft),
        "data": setup["train"],
        "zeroshot_head": "a photo of a {}.",
        "epochs": 3,
        "batch_size": 8,
        "log_every": 1,
        "device": "cpu",
        **kw,
    }
    return mergetune(setup["root"] / name, **opts)


def test_head_mode_with_identity_and_with_a_fisher(setup, clip_head_pair) -> None:
    zs, ft = clip_head_pair
    w1, w2 = _weights(zs)["head.weight"], _weights(ft)["head.weight"]
    ident = _head_run(setup, clip_head_pair, "head-id", trainable="head")
    fisher = torch.rand(w2.shape, generator=torch.Generator().manual_seed(0)) + 0.5
    save_file({"head.weight": fisher}, setup["root"] / "fisher.safetensors")
    fish = _head_run(
        setup,
        clip_head_pair,
        "head-f",
        trainable="head",
        fisher=str(setup["root"] / "fisher.safetensors"),
    )
    assert ident.log[0]["cached_features"] is True
    step = [r for r in ident.log if r["type"] == "step"]
    assert step[0]["zs"] == pytest.approx(float(((w2 - w1) ** 2).sum()), rel=1e-5)
    assert step[0]["lmc"] == pytest.approx(step[0]["main"], rel=1e-6)  # w = w2 at the start
    step_f = [r for r in fish.log if r["type"] == "step"]
    assert step_f[0]["zs"] == pytest.approx(float((fisher * (w2 - w1) ** 2).sum()), rel=1e-5)
    assert step[-1]["zs"] < step[0]["zs"]  # pulled towards the zero-shot head
    ft_w, a, b = _weights(ft), _weights(ident.out), _weights(fish.out)
    moved = [n for n in ft_w if not torch.equal(ft_w[n], a[n])]
    assert moved == ["head.weight"]  # only the trainable tensor changed
    assert not torch.equal(a["head.weight"], b["head.weight"])  # the Fisher matters


def test_subset_mode_through_functional_call(setup, clip_head_pair) -> None:
    res = _head_run(
        setup, clip_head_pair, "subset", trainable="visual.transformer.resblocks.1.mlp.*", lr=1e-3
    )
    assert res.log[0]["cached_features"] is False
    assert res.trainable and all(
        n.startswith("visual.transformer.resblocks.1.mlp.") for n in res.trainable
    )
    steps = [r for r in res.log if r["type"] == "step"]
    assert steps[0]["lmc"] == pytest.approx(steps[0]["main"], rel=1e-6)
    assert steps[0]["zs"] > 0 and steps[-1]["loss"] < steps[0]["loss"]
    ft, got = _weights(clip_head_pair[1]), _weights(res.out)
    moved = {n for n in ft if not torch.equal(ft[n], got[n])}
    assert moved and moved <= set(res.trainable)


def test_head_split_reproduces_the_full_forward(setup, clip_head_pair) -> None:
    """The cached-feature head path and the functional_call path give the same terms and the
    same gradient, away from w2 (so every path point differs)."""
    from mergekit_sg.tune import MergetuneOptions
    from mergekit_sg.tune.mergetuning import (
        Endpoints,
        ObjectiveWeights,
        head_split,
        load_endpoint,
        loss_at,
        weight_objective,
    )
    from mergekit_sg.tune.tasks import build_task

    opts = MergetuneOptions(
        model=setup["model"],
        pretrained=setup["clip"],
        finetuned=str(clip_head_pair[1]),
        data=setup["train"],
        zeroshot_head="a photo of a {}.",
        trainable="head",
        device="cpu",
    )
    task = build_task(opts, torch.device("cpu"))
    module = task.module.eval()
    w1 = {"head.weight": module.head.weight.detach().clone()}
    load_endpoint(task, module, opts.finetuned)
    w2 = {"head.weight": module.head.weight.detach().clone()}
    module.requires_grad_(False)
    w = {"head.weight": module.head.weight.requires_grad_(True)}
    with torch.no_grad():
        noise = torch.randn(w2["head.weight"].shape, generator=torch.Generator().manual_seed(1))
        w["head.weight"].add_(noise)
    batch = task.collate(task.features[:8], torch.device("cpu"))
    split = head_split(module, ["head.weight"])
    assert split is not None
    with torch.no_grad():
        feats = split.features(batch)
    alphas = [0.1, 0.3, 0.5, 0.7, 0.9]
    ends, weights = Endpoints(w1, w2, None), ObjectiveWeights(10, 1)
    fast = weight_objective(loss_at(task, module, batch, split, feats), w, ends, alphas, weights)
    full = weight_objective(loss_at(task, module, batch), w, ends, alphas, weights)
    for k in ("loss", "main", "zs", "lmc"):
        torch.testing.assert_close(fast[k], full[k], rtol=1e-5, atol=1e-6)
    assert float(fast["lmc"].detach()) != pytest.approx(float(fast["main"].detach()))
    g_fast = torch.autograd.grad(fast["loss"], w["head.weight"])[0]
    g_full = torch.autograd.grad(full["loss"], w["head.weight"])[0]
    torch.testing.assert_close(g_fast, g_full, rtol=1e-4, atol=1e-6)


def test_errors_are_one_line(setup, coop_run, tmp_path: Path) -> None:
    from mergekit_sg.tune import mergetune

    head = {"model": setup["model"], "pretrained": setup["clip"], "data": setup["train"]}
    with pytest.raises(SgMergeError, match="matches no parameter"):
        mergetune(tmp_path / "x", **head, finetuned=str(coop_run.out), trainable="nope.*")
    with pytest.raises(SgMergeError, match="--shots is for prompt mode"):
        mergetune(tmp_path / "x", **head, finetuned="ft", trainable="head", shots=4)
    with pytest.raises(SgMergeError, match="--fisher is for --trainable head"):
        mergetune(tmp_path / "x", **_common(setup, finetuned=str(coop_run.out)), fisher="f")
    with pytest.raises(SgMergeError, match="--zs-term is for --trainable head"):
        mergetune(tmp_path / "x", **_common(setup, finetuned=str(coop_run.out)), zs_term="path")
    with pytest.raises(SgMergeError, match="--zs-term path has none"):
        mergetune(
            tmp_path / "x", **head, finetuned="ft", trainable="head", zs_term="path", fisher="f"
        )
    with pytest.raises(SgMergeError, match="needs \\{\\}"):
        mergetune(tmp_path / "x", **_common(setup, finetuned=str(coop_run.out)), zs_template="x")
    with pytest.raises(SgMergeError, match=r"no prompt\.safetensors"):
        mergetune(tmp_path / "x", **_common(setup, finetuned=str(tmp_path)))
    with pytest.raises(SgMergeError, match="--num-points"):
        mergetune(tmp_path / "x", **_common(setup, finetuned=str(coop_run.out)), num_points=0)
    assert not (tmp_path / "x").exists()


def test_prompt_benchmark_recipe_runs_coop_then_mergetune(setup, tmp_path: Path) -> None:
    import yaml

    from mergekit_sg.commands import parse_recipe, run_recipe

    data = {
        "command": "prompt-benchmark",
        "out": str(tmp_path / "bench"),
        "options": {
            "model": setup["model"],
            "pretrained": setup["clip"],
            "datasets": [
                {
                    "name": "pets",
                    "data": setup["train"],
                    "test_data": setup["test"],
                    "zs_template": TEMPLATE,
                    "shifts": {"same": {"data": setup["test"]}},
                }
            ],
            "seeds": [1],
            "shots": 2,
            "coop": {"epochs": 2, "batch_size": 8},
            "mergetune": {"epochs": 1, "batch_size": 8},
            "device": "cpu",
        },
    }
    res = run_recipe(parse_recipe(data))
    summary = yaml.safe_load((tmp_path / "bench" / "summary.json").read_text())
    assert set(summary["pets"]) == {"zero-shot", "init-prompt", "coop", "mergetune"}
    assert set(summary["pets"]["coop"]) == {
        "test.all",
        "test.base",
        "test.novel",
        "test.hm",
        "same.all",
    }
    assert summary["pets"]["coop"]["test.all"] == summary["pets"]["coop"]["same.all"]
    assert res.lines and (tmp_path / "bench" / "pets" / "seed1" / "mergetune").is_dir()
    bad = {**data, "options": {**data["options"], "coop": {"epochz": 2}}}
    with pytest.raises(SgMergeError, match=r"coop\.epochz"):
        parse_recipe(bad)


# ---- real weights: all-MiniLM-L6-v2 and Rotten Tomatoes reviews ----


@pytest.mark.slow
def test_real_minilm_head_mode_paths_measured_with_lmc(tmp_path: Path) -> None:
    """MERGETUNE head mode on the real MiniLM with the demo's zero-shot head and a head
    fine-tuned on frozen Rotten Tomatoes features. With the encoder shared, the loss is convex
    in the head, so every linear path is barrier-free: lmc measures no barrier on any of the
    three paths (the continued model's are not higher than the direct one's); the continued
    head is pulled back towards the zero-shot head, keeps most of the fine-tune's gain, and
    nothing but the head moves."""
    from mergekit_sg.commands import PROMPTS, minilm_dir
    from mergekit_sg.path import lmc
    from mergekit_sg.tune import MergetuneOptions, mergetune
    from mergekit_sg.tune.tasks import build_task

    common = {
        "model": "hf:embedding-classifier",
        "data": "rotten-tomatoes",
        "train_size": 256,
        "max_length": 64,
        "device": "cpu",
    }
    opts = MergetuneOptions(
        pretrained=str(minilm_dir()), zeroshot_head=PROMPTS, finetuned="-", **common
    )
    task = build_task(opts, torch.device("cpu"))
    model = task.module.eval()
    zs, ft, cont = tmp_path / "zs", tmp_path / "ft", tmp_path / "cont"
    zs.mkdir()
    task.save(model, zs)
    with torch.no_grad():  # the frozen encoder's features, once
        parts = []
        for i in range(0, len(task.features), 64):
            b = task.collate(task.features[i : i + 64], torch.device("cpu"))
            parts.append(model.embed(b["input_ids"], b["attention_mask"]))
        feats = torch.cat(parts)
    labels = torch.tensor([f[1] for f in task.features])
    head = model.head.weight.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([head], lr=1e-3)
    for _ in range(50):  # the fine-tuned head (longer overfits 256 reviews)
        loss = torch.nn.functional.cross_entropy(model.scale * feats @ head.T, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w1 = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.copy_(head)
    ft.mkdir()
    task.save(model, ft)
    res = mergetune(
        cont,
        trainable="head",
        pretrained=str(zs),
        finetuned=str(ft),
        epochs=2,
        batch_size=32,
        lr=1e-3,
        **common,
    )
    assert res.log[0]["cached_features"] is True
    ev = "loss=seq-classification:rotten-tomatoes-test,limit=100,max_length=64"
    rep = lmc([zs, cont, ft], None, model=common["model"], eval=[ev], alphas="0:1:0.25")
    heights = {b.path: b.height for b in rep.barriers}
    direct = heights["zero-shot->fine-tuned"]
    assert heights["zero-shot->continued"] <= direct + 1e-6
    assert heights["continued->fine-tuned"] <= direct + 1e-6
    assert all(abs(h) < 1e-6 for h in heights.values())  # convex in the head: no barrier
    losses = {b.path: b.losses for b in rep.barriers}
    l_zs, l_ft = losses["zero-shot->fine-tuned"][0], losses["zero-shot->fine-tuned"][-1]
    l_cont = losses["continued->fine-tuned"][0]
    assert l_ft < l_zs and l_cont < l_zs  # the continued model keeps the speciality gained
    # the encoder in its original layout, the head beside it (classifier_head.safetensors)
    w2 = load_file(ft / "model.safetensors")
    got = load_file(cont / "model.safetensors")
    h2 = load_file(ft / "classifier_head.safetensors")["head.weight"]
    h_cont = load_file(cont / "classifier_head.safetensors")["head.weight"]
    assert (h_cont - w1).norm() < (h2 - w1).norm()
    assert set(got) == set(w2) and all(torch.equal(got[n], w2[n]) for n in w2)
