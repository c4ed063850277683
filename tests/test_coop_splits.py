"""CoOp's dataset layout (DATASETS.md of KaiyangZhou/CoOp) as data specs: `split_zhou_X.json:SPLIT`
reads exactly the file's rows with its class names in label order, the image folder is found
beside the file, base/novel and few-shot sampling work on it, errors are one line, FGVC-Aircraft's
split files and ImageNet's `WNID name` class names are read as CoOp reads them, clip-zeroshot
takes the same spec, and `sgmerge coop` trains from it the very prompt an equivalent CSV gives."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.tune.prompt import few_shot, read_images, sample_shots, split_classes

NAMES = ["american_bulldog", "cat", "bird", "sea_lion", "fish"]  # label order; base: first 3
SHOWN = ["american bulldog", "cat", "bird", "sea lion", "fish"]
SIZES = {"train": 4, "val": 2, "test": 2}


def _png(path: Path, label: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.zeros((32, 32, 3), dtype=np.float32)
    base[..., label % 3] = 90 + 80 * (label // 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype("uint8")).save(
        path
    )


def coop_dataset(home: Path, image_dir: str = "images") -> Path:
    """A dataset folder as CoOp lays it out: the images under home/image_dir and
    split_zhou_Tiny.json beside them, rows [path relative to the image folder, label, name]
    with the classes interleaved (nested paths for even labels, flat ones for odd), and a decoy
    subfolder (oxford_pets/ has annotations/)."""
    split: dict[str, list[list[object]]] = {}
    seed = 0
    for name, n in SIZES.items():
        rows: list[list[object]] = []
        for i in range(n):
            for y, cls in enumerate(NAMES):
                rel = f"{cls}/{name}_{i}.png" if y % 2 == 0 else f"{cls}_{name}_{i}.png"
                _png(home / image_dir / rel, y, seed)
                seed += 1
                rows.append([rel, y, cls])
        split[name] = rows
    (home / "annotations").mkdir()
    (home / "annotations" / "list.txt").write_text("not images\n")
    path = home / "split_zhou_Tiny.json"
    path.write_text(json.dumps(split))
    return path


def _one_line_error(spec: str, *words: str) -> str:
    with pytest.raises(SgMergeError) as e:
        read_images(spec)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("image_dir", ["images", "my_pictures", "."])
def test_each_split_is_exactly_the_json_rows(tmp_path: Path, image_dir: str) -> None:
    """images/ (a known name), any other subfolder, or the JSON's own folder (stanford_cars/,
    whose paths start with cars_train/): the rows come back as written, in file order."""
    js = coop_dataset(tmp_path / "tiny", image_dir)
    rows = json.loads(js.read_text())
    root = tmp_path / "tiny" / image_dir
    for split, n in SIZES.items():
        got = read_images(f"{js}:{split}")
        assert got.paths == [root / r[0] for r in rows[split]]
        assert got.labels == [r[1] for r in rows[split]]
        assert len(got.paths) == n * len(NAMES) and all(p.is_file() for p in got.paths)
        assert got.classnames == SHOWN  # label order, `_` read as spaces as CoOp's prompts do
        assert got.source == f"{js}:{split}"
    # a class-name file overrides the names (same count), as for folders
    (tmp_path / "names.txt").write_text("\n".join(f"class {i}" for i in range(5)) + "\n")
    named = read_images(f"{js}:test", tmp_path / "names.txt")
    assert named.classnames == [f"class {i}" for i in range(5)]


def test_class_names_come_from_every_split(tmp_path: Path) -> None:
    """A split that lacks a class still has all the dataset's classes (train/test agree)."""
    js = coop_dataset(tmp_path / "tiny")
    rows = json.loads(js.read_text())
    rows["val"] = [r for r in rows["val"] if r[1] != 4]  # no fish in val
    js.write_text(json.dumps(rows))
    val = read_images(f"{js}:val")
    assert val.classnames == SHOWN and sorted(set(val.labels)) == [0, 1, 2, 3]


def test_base_novel_and_few_shot_on_a_split(tmp_path: Path) -> None:
    from mergekit_sg.tune.prompt import CoopOptions, prompt_data

    js = coop_dataset(tmp_path / "tiny")
    rows = json.loads(js.read_text())["train"]
    train = read_images(f"{js}:train")
    base, novel = split_classes(train, "base"), split_classes(train, "novel")
    assert base.classnames == SHOWN[:3] and novel.classnames == SHOWN[3:]  # ceil(5/2) = 3 base
    assert base.paths == [train.paths[i] for i, r in enumerate(rows) if r[1] < 3]
    assert base.labels == [r[1] for r in rows if r[1] < 3]
    assert novel.labels == [r[1] - 3 for r in rows if r[1] >= 3]  # relabelled 0, 1
    shots, rest = sample_shots(base, 2, seed=1)
    assert Counter(shots.labels) == {0: 2, 1: 2, 2: 2}
    assert shots.paths == [base.paths[i] for i in few_shot(base.labels, 2, 1)]
    assert set(shots.paths).isdisjoint(base.take(rest).paths)
    assert len(shots.paths) + len(rest) == len(base.paths) == 12
    assert sample_shots(base, 2, seed=1)[0].paths == shots.paths  # seeded
    # CoOp's protocol through prompt_data: 2 shots of the base classes, val from the val split
    opts = CoopOptions(
        model="open_clip:x",
        pretrained="x",
        data=f"{js}:train",
        val_data=f"{js}:val",
        test_data=f"{js}:test",
        shots=2,
        base_classes=True,
        seed=1,
    )
    data = prompt_data(opts, opts.data)
    assert data.train.paths == shots.paths and data.trained_on == "base"
    val_base = split_classes(read_images(f"{js}:val"), "base")
    assert data.val is not None and data.val.paths == val_base.paths  # 2 a class: all of them
    assert data.test is not None and data.test.classnames == SHOWN == data.classnames
    assert len(data.test.paths) == 10


def test_errors_are_one_line(tmp_path: Path) -> None:
    js = coop_dataset(tmp_path / "tiny")
    _one_line_error(str(js), "name the split", f"{js}:train")
    _one_line_error(f"{js}:tset", "no split 'tset' (it has train, val, test)")
    _one_line_error(f"{tmp_path / 'nope.json'}:train", "no such file")
    good = json.loads(js.read_text())
    bad = tmp_path / "tiny" / "bad.json"
    for row, words in (
        (["x.png", "1", "cat"], ("train[1] is not [image_path, label, classname]", '"1"')),
        (["x.png", 1], ("train[1] is not",)),
        (["cat_train_0.png", 0, "dog"], ("label 0 is both 'american_bulldog' and 'dog'",)),
    ):
        bad.write_text(json.dumps({**good, "train": [good["train"][0], row]}))
        _one_line_error(f"{bad}:test", *words)  # every split's rows are checked
    bad.write_text(json.dumps({k: [r for r in v if r[1] != 2] for k, v in good.items()}))
    _one_line_error(f"{bad}:test", "label 2 is in no split (labels must be 0..4)")
    bad.write_text(json.dumps({**good, "test": []}))
    _one_line_error(f"{bad}:test", "split 'test' has no rows")
    (tmp_path / "tiny" / "images").rename(tmp_path / "elsewhere")
    msg = _one_line_error(f"{js}:train", "image root not found", "'american_bulldog/train_0.png'")
    assert f"{tmp_path / 'tiny'}/, {tmp_path / 'tiny' / 'annotations'}/" in msg  # what it tried
    (tmp_path / "elsewhere").rename(tmp_path / "tiny" / "images")
    (tmp_path / "tiny" / "images" / "cat_test_1.png").unlink()
    _one_line_error(f"{js}:test", "cat_test_1.png does not exist (1 missing)")


def test_fgvc_aircraft_split_files(tmp_path: Path) -> None:
    """fgvc_aircraft/images_variant_SPLIT.txt: `NAME CLASS` lines (classes may hold spaces and
    slashes), names from variants.txt in its order, images at images/NAME.jpg."""
    home = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F/A-18", "Cessna 172"]
    home.mkdir()
    (home / "variants.txt").write_text("\n".join(variants) + "\n")
    lines = ["1025794 707-320", "1340192 Cessna 172", "0056978 F/A-18", "0062765 707-320"]
    (home / "images_variant_train.txt").write_text("\n".join(lines) + "\n")
    for i, ln in enumerate(lines):
        _png(home / "images" / f"{ln.split()[0]}.jpg", i, i)
    got = read_images(home / "images_variant_train.txt")
    assert got.paths == [home / "images" / f"{ln.split()[0]}.jpg" for ln in lines]
    assert got.labels == [0, 3, 2, 0] and got.classnames == variants
    assert split_classes(got, "base").classnames == ["707-320", "A300B4"]
    (home / "images_variant_test.txt").write_text("1025794 737-800\n")
    _one_line_error(str(home / "images_variant_test.txt"), "line 1 '1025794 737-800'")
    (home / "variants.txt").unlink()
    _one_line_error(str(home / "images_variant_train.txt"), "no variants.txt beside it")


def test_imagenet_wnid_class_names(tmp_path: Path) -> None:
    """CoOp's imagenet/classnames.txt (`n01440764 tench` lines) names wnid folders; a folder of
    some of the classes (ImageNet-A/R) takes just its own names, in folder order."""
    names = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark"}
    (tmp_path / "classnames.txt").write_text("".join(f"{k} {v}\n" for k, v in names.items()))
    for i, wnid in enumerate(names):
        for j in range(2):
            _png(tmp_path / "val" / wnid / f"{j}.png", i, j)
            if i:
                _png(tmp_path / "imagenet-a" / wnid / f"{j}.png", i, j)
    val = read_images(tmp_path / "val", tmp_path / "classnames.txt")
    assert val.classnames == list(names.values()) and val.labels == [0, 0, 1, 1, 2, 2]
    sub = read_images(tmp_path / "imagenet-a", tmp_path / "classnames.txt")
    assert sub.classnames == ["goldfish", "great white shark"] and sub.labels == [0, 0, 1, 1]


def test_clip_zeroshot_reads_a_split(tmp_path: Path) -> None:
    """`--eval x=clip-zeroshot:split.json:test` scores the same as the class folders."""
    from helpers import COLOURS, ColourClip, colour_png, colour_tokens, to_tensor

    from mergekit_sg.evals import build_evaluator
    from mergekit_sg.models import LoadedModel

    images = {  # as test_evals' colour folder: orange is red; a blue image filed as green
        "red": [(255, 0, 0), (255, 160, 0)],
        "green": [(0, 255, 0), (40, 0, 255)],
        "blue": [(0, 0, 255), (0, 0, 200)],
    }
    rows = []
    for y, (name, rgbs) in enumerate(images.items()):
        for i, rgb in enumerate(rgbs):
            colour_png(tmp_path / "colours" / "pics" / f"{name}_{i}.png", rgb)
            rows.append([f"{name}_{i}.png", y, name])
    js = tmp_path / "colours" / "split_zhou_Colours.json"
    js.write_text(json.dumps({"train": [], "test": rows}))
    head = tmp_path / "head.txt"
    head.write_text("\n".join(COLOURS) + "\n")
    model = LoadedModel(
        ColourClip(), "open_clip", "test", tmp_path, tokenizer=colour_tokens, preprocess=to_tensor
    )
    own = build_evaluator(f"x=clip-zeroshot:{js}:test,batch_size=4")
    assert own.classnames == ["red", "green", "blue"] and own.targets == [0, 0, 1, 1, 2, 2]
    assert own(model)["top1"] == 5 / 6  # only the misfiled blue image is wrong
    full = build_evaluator(f"x=clip-zeroshot:{js}:test,classes={head}")
    assert full.targets == [1, 1, 3, 3, 4, 4]
    assert full(model)["top1"] == 4 / 6  # orange is nearer yellow among all seven
    with pytest.raises(SgMergeError, match=r"^--eval x: .*no split 'val' \(it has train, test\)$"):
        build_evaluator(f"x=clip-zeroshot:{js}:val")


# ---- `sgmerge coop` end to end on a tiny random open_clip CLIP ----


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    pytest.importorskip("torchvision")
    open_clip = pytest.importorskip("open_clip")
    from helpers import register_tiny_clip
    from safetensors.torch import save_file

    name = register_tiny_clip()
    root = tmp_path_factory.mktemp("coop-splits")
    torch.manual_seed(0)
    clip = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, root / "clip.safetensors")
    return {"model": f"open_clip:{name}", "clip": str(root / "clip.safetensors")}


def test_sgmerge_coop_trains_from_the_split_file(tiny_clip, tmp_path: Path, capsys) -> None:
    from helpers import cli
    from safetensors.torch import load_file

    from mergekit_sg.tune.prompt import coop, load_prompt, prompt_eval, split_accuracy

    js = coop_dataset(tmp_path / "tiny")
    common = ["--model", tiny_clip["model"], "--pretrained", tiny_clip["clip"], "--shots", "2"]
    common += ["--base-classes", "--epochs", "1", "--batch-size", "4", "--log-every", "1"]
    common += ["--warmup-epochs", "0", "--lr", "0.05", "--device", "cpu", "-q"]
    out = tmp_path / "coop"
    res = cli(
        capsys,
        "coop",
        *common,
        "--data",
        f"{js}:train",
        "--val-data",
        f"{js}:val",
        "--test-data",
        f"{js}:test",
        "--save-init",
        str(tmp_path / "init"),
        "-o",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["classnames"] == SHOWN and meta["trained_on"] == "base"
    from mergekit_sg.commands.run import load_recipe  # the plain CLI run's own recipe

    assert load_recipe(out / "sgmerge_recipe.yaml").options.data == f"{js}:train"
    summary = json.loads((out / "coop.json").read_text())
    assert summary["examples"] == 6 and summary["options"]["data"] == f"{js}:train"
    assert summary["best_epoch"] == 1  # validated on the val split's base classes
    t = summary["test"]
    assert set(t) == {"all", "base", "novel", "hm"}
    assert t["hm"] == pytest.approx(2 * t["base"] * t["novel"] / (t["base"] + t["novel"]))
    assert t["base"] * 6 == pytest.approx(round(t["base"] * 6))  # 6 base test images
    assert t["novel"] * 4 == pytest.approx(round(t["novel"] * 4))  # 4 novel ones
    steps = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert len([r for r in steps if r["type"] == "step"]) == 2  # 6 images, batches of 4
    # the saved prompt reloads and scores the test split to the same numbers, bit for bit
    pm = load_prompt(out)
    assert split_accuracy(pm, read_images(f"{js}:test"), True) == t
    base = prompt_eval(SimpleNamespace(module=pm), f"{js}:test", classes="base")
    assert base["accuracy"] == t["base"]
    # the same dataset as a CSV manifest + class-name file trains the very same prompt
    rows = json.loads(js.read_text())
    for split in ("train", "val", "test"):
        lines = "".join(f"images/{r[0]},{r[1]}\n" for r in rows[split])
        (tmp_path / "tiny" / f"{split}.csv").write_text("path,label\n" + lines)
    (tmp_path / "tiny" / "names.txt").write_text("\n".join(SHOWN) + "\n")
    csv = coop(
        tmp_path / "coop-csv",
        model=tiny_clip["model"],
        pretrained=tiny_clip["clip"],
        data=str(tmp_path / "tiny" / "train.csv"),
        val_data=str(tmp_path / "tiny" / "val.csv"),
        test_data=str(tmp_path / "tiny" / "test.csv"),
        classnames=str(tmp_path / "tiny" / "names.txt"),
        shots=2,
        base_classes=True,
        epochs=1,
        batch_size=4,
        log_every=1,
        warmup_epochs=0,
        lr=0.05,
        device="cpu",
    )
    assert csv.test == t
    ctx = load_file(out / "prompt.safetensors")["ctx"]
    assert torch.equal(ctx, load_file(csv.out / "prompt.safetensors")["ctx"])
    assert not torch.equal(ctx, load_file(tmp_path / "init" / "prompt.safetensors")["ctx"])


def test_sgmerge_coop_refuses_a_missing_split(tiny_clip, tmp_path: Path, capsys) -> None:
    from helpers import assert_refused, cli

    js = coop_dataset(tmp_path / "tiny")
    out = tmp_path / "coop"
    res = cli(
        capsys,
        "coop",
        "--model",
        tiny_clip["model"],
        "--pretrained",
        tiny_clip["clip"],
        "--data",
        f"{js}:train",
        "--test-data",
        f"{js}:tets",
        "-o",
        str(out),
    )
    assert_refused(res, out, "no split 'tets' (it has train, val, test)")
