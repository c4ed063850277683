"""`--report-to tensorboard,mlflow` as a user runs it: the event files (read back with
TensorBoard's EventAccumulator) and the MLflow runs (read back from the local file store with
MlflowClient) hold exactly what the JSONL log / results.csv hold, at the right steps; the
options are the run's parameters; an unknown tracker or a missing package is one error line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from helpers import main_rc as _cli
from tunekit import bert_with_tokenizer, sentiment_rows, write_csv

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

EVALS = [
    "--eval", "speciality=python:evalfns:weight_mean",
    "--eval", "generality=python:evalfns:lm_loss,primary=accuracy",
]  # fmt: skip


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the one run under `logdir` -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    acc = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def _mlflow_run(store: Path, experiment: str):
    """(client, the one run of `experiment`) in the file store `store`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=str(store))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def _log(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def bert(bert_pair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("track_bert")
    return {
        "pre": bert_with_tokenizer(bert_pair["pre"], root / "pre"),
        "train": write_csv(root / "train.csv", sentiment_rows(24, seed=0)),
        "test": write_csv(root / "test.csv", sentiment_rows(16, seed=1)),
    }


def _finetune_args(bert: dict[str, Path], out: Path) -> list[str]:
    return [
        "finetune", "--model", "hf:seq-classification", "--pretrained", str(bert["pre"]),
        "--data", str(bert["train"]), "--labels", "neg,pos", "--max-length", "16",
        "--epochs", "2", "--batch-size", "8", "--lr", "0.01", "--log-every", "1",
        "--grad-clip", "1.0", "--device", "cpu", "-q", "-o", str(out),
        "--eval", f"speciality=seq-classification:{bert['test']},labels=neg+pos",
    ]  # fmt: skip


def test_finetune_reports_the_log_to_tensorboard_and_mlflow(
    bert, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = tmp_path / "ft"
    assert _cli(*_finetune_args(bert, out), "--report-to", "tensorboard,mlflow") == 0
    log = _log(out)
    steps = [r for r in log if r["type"] == "step"]
    evals = [r for r in log if r["type"] == "eval"]
    assert len(steps) == 6 and len(evals) == 3  # 3 steps per epoch; epochs 0, 1, 2
    acc = "eval/speciality.accuracy"
    want = {
        "train/loss": [(r["step"], r["loss"]) for r in steps],
        "train/lr": [(r["step"], r["lr"]) for r in steps],
        "train/grad_norm": [(r["step"], r["grad_norm"]) for r in steps],
        acc: [(r["step"], r["metrics"]["speciality"]["accuracy"]) for r in evals],
    }
    tb = _scalars(out / "runs")
    for tag, pairs in want.items():  # event files hold float32
        assert [s for s, _ in tb[tag]] == [s for s, _ in pairs], tag
        assert [v for _, v in tb[tag]] == pytest.approx([v for _, v in pairs], rel=1e-6), tag
    assert [s for s, _ in tb[acc]] == [0, 3, 6]  # the step each epoch ended at
    client, run = _mlflow_run(out / "mlruns", "finetune")
    assert run.info.status == "FINISHED" and run.info.run_name == "ft"
    for tag, pairs in want.items():  # MLflow keeps float64
        assert _history(client, run, tag) == pairs, tag
    assert run.data.params["options.lr"] == "0.01"
    assert run.data.params["options.epochs"] == "2" and run.data.params["steps"] == "6"
    assert json.loads(run.data.params["options.report_to"]) == ["tensorboard", "mlflow"]
    # nothing staged is left beside OUT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft"]


def test_finetune_logs_to_an_mlflow_uri_and_a_logging_dir(
    bert, tmp_path: Path, monkeypatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(store))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    out, tb = tmp_path / "ft", tmp_path / "tb"
    args = [*_finetune_args(bert, out), "--report-to", "all", "--logging-dir", str(tb)]
    assert _cli(*args, "--experiment", "sentiment") == 0
    assert not (out / "mlruns").exists() and not (out / "runs").exists()
    steps = [r for r in _log(out) if r["type"] == "step"]
    client, run = _mlflow_run(store, "sentiment")  # the option wins over the environment
    assert _history(client, run, "train/task_loss") == [(r["step"], r["task_loss"]) for r in steps]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in steps]


def test_scan_reports_each_alpha_and_the_selection(llama_pair, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    out = tmp_path / "scan"
    code = _cli(
        "scan", str(pre), str(ft), "--model", "hf:causal-lm", *EVALS, "--alphas", "0:1:0.25",
        "--select", "max-speciality", "-q", "-o", str(out), "--report-to", "tensorboard,mlflow",
    )  # fmt: skip
    assert code == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    selected = json.loads((out / "summary.json").read_text())["selected_alpha"]
    tb = _scalars(out / "runs")
    client, run = _mlflow_run(out / "mlruns", "scan")
    cols = ("alpha", "speciality.value", "generality.loss", "generality.accuracy", "generality")
    for col in cols:
        want = [(i, float(r[col])) for i, r in enumerate(rows) if r[col] != ""]  # None: unset
        assert want, col
        assert _history(client, run, col) == want, col
        assert [s for s, _ in tb[col]] == [s for s, _ in want], col
        assert [v for _, v in tb[col]] == pytest.approx([v for _, v in want], rel=1e-6), col
    index = [float(r["alpha"]) for r in rows].index(selected)
    assert _history(client, run, "selected_alpha") == [(index, selected)]
    assert tb["selected_alpha"] == [(index, pytest.approx(selected))]
    assert run.data.params["options.select"] == "max-speciality"
    assert run.data.params["inputs.finetuned"] == str(ft)
    assert run.data.tags["selection"].startswith(f"alpha = {selected:g}")


def test_lmc_reports_each_path_and_its_barrier(llama_pair, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    out = tmp_path / "lmc"
    code = _cli(
        "lmc", str(pre), str(ft), "--model", "hf:causal-lm", "--eval",
        "loss=python:evalfns:lm_loss", "--alphas", "0:1:0.5", "-q", "-o", str(out),
        "--report-to", "mlflow",
    )  # fmt: skip
    assert code == 0 and not (out / "runs").exists()
    data = json.loads((out / "lmc.json").read_text())
    (b,) = data["barriers"]
    client, run = _mlflow_run(out / "mlruns", "lmc")
    at = [0.0, 0.5, 1.0].index(b["at"])  # the step of the barrier's alpha
    assert _history(client, run, "A_to_B/barrier") == [(at, b["height"])]
    assert [s for s, _ in _history(client, run, "A_to_B/loss.loss")] == [0, 1, 2]


def test_coop_and_mergetune_report_steps_validation_and_test(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("open_clip")
    pytest.importorskip("torchvision")
    import open_clip
    import torch
    from helpers import register_tiny_clip
    from safetensors.torch import save_file
    from test_mergetune import _pngs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = register_tiny_clip()
    torch.manual_seed(0)
    clip = open_clip.create_model(name)
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, weights)
    out = tmp_path / "coop"
    code = _cli(
        "coop", "--model", f"open_clip:{name}", "--pretrained", str(weights),
        "--data", str(_pngs(tmp_path / "train", 6, 0)), "--test-data",
        str(_pngs(tmp_path / "test", 2, 1)), "--shots", "4", "--batch-size", "8",
        "--epochs", "2", "--log-every", "1", "--device", "cpu", "-q", "-o", str(out),
        "--report-to", "tensorboard,mlflow",
    )  # fmt: skip
    assert code == 0
    log = _log(out)
    steps = [r for r in log if r["type"] == "step"]
    evals = [r for r in log if r["type"] == "eval"]
    (test,) = [r for r in log if r["type"] == "test"]
    assert steps and evals
    tb = _scalars(out / "runs")
    client, run = _mlflow_run(out / "mlruns", "coop")
    want = {
        "train/loss": [(r["step"], r["loss"]) for r in steps],
        "eval/val_accuracy": [(r["step"], r["val_accuracy"]) for r in evals],
        "test/all": [(steps[-1]["step"], test["all"])],
    }
    for tag, pairs in want.items():
        assert _history(client, run, tag) == pairs, tag
        assert [s for s, _ in tb[tag]] == [s for s, _ in pairs], tag
        assert [v for _, v in tb[tag]] == pytest.approx([v for _, v in pairs], rel=1e-6), tag
    assert run.data.params["options.shots"] == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.safetensors",
        "coop",
        "test",
        "train",
    ]
    # MERGETUNE continuing the prompt: its own experiment, its log's terms at their steps
    cont = tmp_path / "cont"
    code = _cli(
        "mergetune", "--model", f"open_clip:{name}", "--pretrained", str(weights),
        "--finetuned", str(out), "--data", str(tmp_path / "train"), "--shots", "4",
        "--batch-size", "8", "--epochs", "1", "--log-every", "1", "--device", "cpu", "-q",
        "-o", str(cont), "--report-to", "mlflow",
    )  # fmt: skip
    assert code == 0 and not (cont / "runs").exists()
    steps = [r for r in _log(cont) if r["type"] == "step"]
    client, run = _mlflow_run(cont / "mlruns", "mergetune")
    for term in ("loss", "main", "zs", "lmc", "lr"):
        assert _history(client, run, f"train/{term}") == [(r["step"], r[term]) for r in steps]
    assert run.data.params["options.w_zs"] == "10.0"


def test_unknown_tracker_and_missing_package_are_one_line(
    bert, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "ft"
    assert _cli(*_finetune_args(bert, out), "--report-to", "nonsense") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sgmerge: error: --report-to: 'nonsense' is not a tracker: tensorboard, mlflow, all "
        "or none (a comma list)"
    ]
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert _cli(*_finetune_args(bert, out), "--report-to", "tensorboard,mlflow") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'mergekit-sg[mlflow]'" in err[0]
    assert err[0].startswith("sgmerge: error: --report-to: mlflow needs the mlflow package")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_scan_leaves_no_tracker_files(llama_pair, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pre, ft = llama_pair["pre_f32"], llama_pair["ft_f32"]
    code = _cli(
        "scan", str(pre), str(ft), "--model", "hf:causal-lm", "--eval", "oops", "-q",
        "-o", str(tmp_path / "s"), "--report-to", "tensorboard,mlflow",
    )  # fmt: skip
    assert code == 2 and list(tmp_path.iterdir()) == []


def test_a_resumed_finetune_continues_its_event_files_and_mlflow_run(
    bert, tmp_path: Path, monkeypatch
) -> None:
    from mergekit_sg.tune import finetune, state_dir

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    opts = dict(
        model="hf:seq-classification", pretrained=str(bert["pre"]), data=str(bert["train"]),
        labels="neg,pos", max_length=16, epochs=2, batch_size=8, lr=1e-2, log_every=1,
        checkpoint_every=2, device="cpu", report_to=["tensorboard", "mlflow"],
    )  # fmt: skip

    def stop(step: int) -> None:
        if step == 3:  # logged, but after the last saved state (step 2)
            raise KeyboardInterrupt

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        finetune(out, on_step=stop, **opts)
    assert (state_dir(out) / "track" / "runs").is_dir()
    assert finetune(out, **opts).resumed_at_step == 2
    want = [(r["step"], r["loss"]) for r in _log(out) if r["type"] == "step"]
    assert [s for s, _ in want] == [1, 2, 3, 4, 5, 6]
    tb = _scalars(out / "runs")  # one run: the killed run's step 3 purged, then logged again
    assert [s for s, _ in tb["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in tb["train/loss"]] == pytest.approx([v for _, v in want], rel=1e-6)
    client, run = _mlflow_run(out / "mlruns", "finetune")  # the same run, continued
    assert run.info.status == "FINISHED"
    # MLflow cannot drop a point: step 3 is there twice, with the same value (a seeded rerun)
    assert sorted(set(_history(client, run, "train/loss"))) == want
    assert not state_dir(out).exists()


def test_report_to_takes_the_cli_the_yaml_and_the_python_forms() -> None:
    import yaml

    from mergekit_sg.commands.scan import ScanOptions

    for text in (
        "report_to: tensorboard,mlflow",
        "report_to: [tensorboard, mlflow]",
        "report_to: all",
    ):
        given = yaml.safe_load(text)
        assert ScanOptions(model="hf", **given).report_to == ["tensorboard", "mlflow"], text
    assert ScanOptions(model="hf", report_to=["mlflow", "mlflow,none"]).report_to == ["mlflow"]
    assert ScanOptions(model="hf", report_to="none").report_to == []
    assert ScanOptions(model="hf").report_to == []
