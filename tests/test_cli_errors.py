"""Bad input: one clear line, status 2, nothing written, no code from a pickle ever runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_refused, run_cli
from safetensors.torch import save_file


def st_dir(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / "model.safetensors")
    return path


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    return st_dir(tmp_path / "good", {"a.weight": torch.ones(4, 4), "b.bias": torch.zeros(4)})


def test_missing_path(tmp_path: Path, good: Path) -> None:
    res = run_cli("interpolate", str(tmp_path / "nope"), str(good), "-o", str(tmp_path / "o"))
    assert_refused(res, tmp_path / "o", "nope", "no such file")


def test_key_missing_on_one_side(tmp_path: Path, good: Path) -> None:
    other = st_dir(tmp_path / "other", {"a.weight": torch.ones(4, 4), "c.bias": torch.zeros(4)})
    res = run_cli("interpolate", str(good), str(other), "-o", str(tmp_path / "o"))
    assert_refused(res, tmp_path / "o", "'c.bias'", "'b.bias'", "only in")


def test_many_missing_keys_are_summarised(tmp_path: Path, good: Path) -> None:
    big = {f"layer.{i}.w": torch.ones(2) for i in range(10)} | {"a.weight": torch.ones(4, 4)}
    other = st_dir(tmp_path / "other", big | {"b.bias": torch.zeros(4)})
    res = run_cli("interpolate", str(good), str(other), "-o", str(tmp_path / "o"))
    assert_refused(res, tmp_path / "o", "10 key(s)", "(and 7 more)")


def test_shape_mismatch(tmp_path: Path, good: Path) -> None:
    other = st_dir(tmp_path / "other", {"a.weight": torch.ones(4, 5), "b.bias": torch.zeros(4)})
    res = run_cli("interpolate", str(good), str(other), "-o", str(tmp_path / "o"))
    assert_refused(res, tmp_path / "o", "shape mismatch", "a.weight", "[4, 4] vs [4, 5]")


def test_truncated_safetensors(tmp_path: Path, good: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    res = run_cli("interpolate", str(good), str(bad), "-o", str(tmp_path / "o"))
    assert_refused(res, tmp_path / "o", "truncated", "model.safetensors")


def test_garbage_safetensors(tmp_path: Path, good: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"x" * 32)
    res = run_cli("inspect", str(bad))
    assert res.returncode == 2 and "not a valid safetensors file" in res.stderr


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SG_EVIL_MARKER']}",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path, good: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SG_EVIL_MARKER", str(marker))
    evil = tmp_path / "evil.bin"
    torch.save({"a.weight": torch.ones(4, 4), "b.bias": Evil()}, evil)
    assert not marker.exists()
    res = run_cli("interpolate", str(good), str(evil), "-o", str(tmp_path / "o"))
    assert_refused(res, tmp_path / "o", "evil.bin", "refused to load")
    assert not marker.exists()


def test_existing_destination_needs_force(tmp_path: Path, good: Path) -> None:
    dest = tmp_path / "o"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    res = run_cli("interpolate", str(good), str(good), "-o", str(dest))
    assert res.returncode == 2 and "already exists" in res.stderr and "--force" in res.stderr
    assert (dest / "keep.txt").read_text() == "mine"
    res = run_cli("interpolate", str(good), str(good), "-o", str(dest), "--force", "-q")
    assert res.returncode == 0, res.stderr
    assert not (dest / "keep.txt").exists() and (dest / "model.safetensors").exists()


def test_bad_options(tmp_path: Path, good: Path) -> None:
    o = tmp_path / "o"
    res = run_cli("interpolate", str(good), str(good), "-o", str(o), "--alpha", "x")
    assert_refused(res, o, "--alpha")
    res = run_cli("interpolate", str(good), str(good), "-o", str(o), "--alpha-for", "visual")
    assert_refused(res, o, "GLOB=VALUE")
    res = run_cli("interpolate", str(good), str(good), "-o", str(o), "--max-shard-size", "lots")
    assert_refused(res, o, "bad size")
    res = run_cli("interpolate", str(good), str(good), "-o", str(o), "--dtype", "int8")
    assert res.returncode == 2 and not o.exists()


def test_debug_shows_traceback(tmp_path: Path, good: Path) -> None:
    res = run_cli("--debug", "inspect", str(tmp_path / "nope"))
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_extrapolation_warning_on_cli(tmp_path: Path, good: Path) -> None:
    res = run_cli("interpolate", str(good), str(good), "-o", str(tmp_path / "o"), "--alpha", "1.2")
    assert res.returncode == 0, res.stderr
    assert "sgmerge: warning: alpha=1.2 is outside [0, 1]" in res.stderr
