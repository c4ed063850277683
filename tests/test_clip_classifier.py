"""The open_clip classifier (open_clip weights + classifier_head.safetensors) as a live model:
`load_model` wraps the CLIP with its head, `LinearPath` moves the head with the tower and lands
on `sgmerge interpolate`'s output, `clip-classifier` scores it with its own head, and
`sgmerge lmc ZS CONTINUED FT` measures MERGETUNE head mode's three paths from the CLI.
Tiny random-init CLIP, synthetic PNGs, a real finetune + mergetune head-mode run."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import register_tiny_clip
from safetensors.torch import load_file, save_file

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("torchvision")

CLASSES = ("bird", "cat", "dog")


def _pngs(root: Path, per_class: int, seed: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((36, 36, 3), dtype=np.float32)
            base[..., c] = 120
            img = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype("uint8")
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """sgmerge finetune (head mode, --save-init) then sgmerge mergetune --trainable head."""
    from mergekit_sg.tune import finetune, mergetune

    name = register_tiny_clip()
    root = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    clip = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, root / "clip.safetensors")
    train, test = _pngs(root / "train", 4, 0), _pngs(root / "test", 3, 1)
    common = {
        "model": f"open_clip:{name}",
        "pretrained": str(root / "clip.safetensors"),
        "data": str(train),
        "zeroshot_head": "a photo of a {}.",
        "batch_size": 6,
        "device": "cpu",
    }
    ev = [f"s=clip-classifier:{test}"]  # evaluated during training on the live classifier
    ft = finetune(root / "ft", epochs=2, lr=1e-3, save_init=str(root / "zs"), eval=ev, **common)
    mergetune(root / "cont", finetuned=str(root / "ft"), trainable="head", epochs=2, **common)
    return {
        "model": common["model"],
        "root": root,
        "test": test,
        "ft_log": ft.log,
        **{k: root / k for k in ("zs", "ft", "cont")},
    }


def _images(folder: Path, preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    xs, ys = [], []
    for c, name in enumerate(CLASSES):
        for p in sorted((folder / name).glob("*.png")):
            with Image.open(p) as im:
                xs.append(preprocess(im.convert("RGB")))
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def _logits(model, x: torch.Tensor) -> torch.Tensor:
    return model.module(x)


def test_load_model_wraps_the_clip_with_its_head(run) -> None:
    from mergekit_sg.evals import build_evaluator
    from mergekit_sg.models import HEAD_WEIGHTS, ClipClassifier, load_model

    ft = run["ft"]
    lm = load_model(run["model"], ft)
    plain = load_model(run["model"], ft, head=False)
    assert isinstance(lm.module, ClipClassifier) and not isinstance(plain.module, ClipClassifier)
    assert lm.extra["labels"] == list(CLASSES) and lm.side_weights == (HEAD_WEIGHTS,)
    assert lm.rename("clip.visual.conv1.weight") == "visual.conv1.weight"
    assert lm.rename("head.weight") == "head.weight"
    head = load_file(ft / HEAD_WEIGHTS)["head.weight"]
    x, y = _images(run["test"], lm.preprocess)
    with torch.no_grad():
        by_hand = F.normalize(plain.module.encode_image(x).float(), dim=-1) @ head.T
    got = _logits(lm, x)
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-6)
    # the classifier scores with that head: cross-entropy and top-1 of the hand logits
    ev = build_evaluator(f"s=clip-classifier:{run['test']}")
    m = ev(lm)
    assert m["loss"] == pytest.approx(F.cross_entropy(by_hand, y).item(), rel=1e-5)
    assert m["top1"] == pytest.approx((by_hand.argmax(1) == y).float().mean().item())
    # finetune's --eval saw the same numbers on its live classifier at the last epoch
    last = [r for r in run["ft_log"] if r["type"] == "eval"][-1]["metrics"]["s"]
    assert last["loss"] == pytest.approx(m["loss"], rel=1e-6) and last["top1"] == m["top1"]
    # clip-zeroshot still scores the same model with text prompts, as it scores the plain CLIP
    zs_ev = f"z=clip-zeroshot:{run['test']},templates={_templates(run['root'])}"
    assert build_evaluator(zs_ev)(lm) == build_evaluator(zs_ev)(plain)
    # a plain CLIP has no head to score with
    from mergekit_sg.errors import SgMergeError

    with pytest.raises(SgMergeError, match="clip-classifier needs an open_clip classifier"):
        ev(plain)


def _templates(root: Path) -> Path:
    f = root / "templates.txt"
    f.write_text("a photo of a {}.\n")
    return f


def test_linear_path_endpoints_and_interpolate_agree(run, tmp_path: Path) -> None:
    from mergekit_sg.commands import interpolate_and_push
    from mergekit_sg.merge import InterpolateOptions, lerp
    from mergekit_sg.models import HEAD_META, HEAD_WEIGHTS, LinearPath, load_model
    from mergekit_sg.path.run import fingerprint

    zs, ft, cont = run["zs"], run["ft"], run["cont"]
    lm = load_model(run["model"], zs)
    x, _ = _images(run["test"], lm.preprocess)
    path = LinearPath(lm.module, zs, ft, rename=lm.rename, side_weights=lm.side_weights)
    assert "head.weight" in path.live  # the head moves along the path
    at0 = _logits(load_model(run["model"], zs), x)
    at1 = _logits(load_model(run["model"], ft), x)
    assert not torch.allclose(at0, at1)
    path.set(0.0)
    assert torch.equal(_logits(lm, x), at0)
    path.set(1.0)
    assert torch.equal(_logits(lm, x), at1)

    opts = InterpolateOptions(alpha=[0.5, 0.25])
    res, _ = interpolate_and_push(zs, ft, tmp_path / "wise", opts)
    h0 = load_file(zs / HEAD_WEIGHTS)["head.weight"]
    h1 = load_file(ft / HEAD_WEIGHTS)["head.weight"]
    for alpha, out in res.outputs.items():
        assert (out / HEAD_META).read_text() == (ft / HEAD_META).read_text()
        assert torch.equal(load_file(out / HEAD_WEIGHTS)["head.weight"], lerp(h0, h1, alpha))
        path.set(alpha)
        assert torch.equal(_logits(lm, x), _logits(load_model(run["model"], out), x))
    # the heads were merged inside the atomic output: no scratch or temporary folder is left
    assert not [p for p in tmp_path.rglob(".*")], list(tmp_path.rglob(".*"))
    # a single alpha: the head is there too, in the output folder itself
    import mergekit_sg as sg

    one = sg.interpolate(zs, ft, tmp_path / "one", alpha=[0.25])  # the Python API: the same
    assert torch.equal(load_file(one.out / HEAD_WEIGHTS)["head.weight"], lerp(h0, h1, 0.25))
    assert sorted(p.name for p in one.out.iterdir() if p.name.startswith(".")) == []

    # head mode: CONT and FT share the open_clip weights, only the head differs; the resume
    # fingerprint must tell them apart
    a = load_file(cont / "open_clip_model.safetensors")
    b = load_file(ft / "open_clip_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fingerprint(cont) == fingerprint(ft)
    assert fingerprint(cont, lm.side_weights) != fingerprint(ft, lm.side_weights)


def test_interpolate_one_sided_head_warns_and_writes_plain_clip(run, tmp_path: Path) -> None:
    from mergekit_sg.models import HEAD_WEIGHTS, interpolate_with_head

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        res = interpolate_with_head(
            run["root"] / "clip.safetensors", run["ft"], tmp_path / "o", open_clip_model=None
        )
    assert any("the head is left out" in str(w.message) for w in got)
    assert not (res.outputs[0.5] / HEAD_WEIGHTS).exists()


def test_cli_lmc_on_mergetune_head_mode(run, tmp_path: Path) -> None:
    """`sgmerge lmc ZS CONT FT --model open_clip:ARCH --eval loss=clip-classifier:TEST`: three
    paths, each endpoint's loss the evaluator's on that checkpoint loaded on its own."""
    from mergekit_sg.cli.app import main
    from mergekit_sg.evals import build_evaluator
    from mergekit_sg.models import load_model

    zs, cont, ft = run["zs"], run["cont"], run["ft"]
    spec = f"loss=clip-classifier:{run['test']}"
    shown = warnings.showwarning
    try:
        args = ["--model", run["model"], "--eval", spec, "--alphas", "0,0.5,1", "--quiet"]
        code = main(["lmc", str(zs), str(cont), str(ft), *args, "-o", str(tmp_path / "lmc")])
    finally:
        warnings.showwarning = shown
    assert code == 0
    with open(tmp_path / "lmc" / "lmc.csv") as f:
        rows = list(csv.DictReader(f))
    curves: dict[str, dict[float, float]] = {}
    for r in rows:
        curves.setdefault(r["path"], {})[float(r["alpha"])] = float(r["loss"])
    assert set(curves) == {"zero-shot->continued", "continued->fine-tuned", "zero-shot->fine-tuned"}
    direct = {
        k: build_evaluator(spec)(load_model(run["model"], p))["loss"]
        for k, p in (("zs", zs), ("cont", cont), ("ft", ft))
    }
    assert len(set(direct.values())) == 3  # three different heads, three different losses
    ends = {
        "zero-shot->continued": ("zs", "cont"),
        "continued->fine-tuned": ("cont", "ft"),
        "zero-shot->fine-tuned": ("zs", "ft"),
    }
    for p, (a, b) in ends.items():
        assert curves[p][0.0] == direct[a] and curves[p][1.0] == direct[b], p
        assert len(curves[p]) == 3
