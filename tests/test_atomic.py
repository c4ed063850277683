"""Atomic output: everything in the output fsynced before the rename, --force as one
rename-exchange (with the two-rename fallback), stale temporary folders of dead runs removed by
the next run in that folder and nothing else. In process, through the CLI's main()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mergekit_sg.cli.app import main
from mergekit_sg.io import atomic
from mergekit_sg.io.atomic import TMP_TAG

DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: never a live process


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    save_file({f"w{i}": torch.full((64, 64), float(i)) for i in range(4)}, d / "model.safetensors")
    (d / "config.json").write_text('{"architectures": ["X"]}\n')
    (d / "tokenizer.json").write_text("{}\n")
    return d


def sgmerge(*args: object) -> int:
    return main([str(a) for a in args])


def test_every_file_and_folder_is_fsynced_before_the_rename(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, Path.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(self: Path, target: Path) -> Path:
        events.append(("rename", str(self)))
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "rename", rename)
    dest = tmp_path / "out"
    assert sgmerge("interpolate", src, src, "-o", dest, "-q", "--max-shard-size", "20KB") == 0
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == 1
    tmp = events[renames[0]][1]
    synced = {p for kind, p in events[: renames[0]] if kind == "fsync"}
    files = [p.relative_to(dest) for p in dest.rglob("*") if p.is_file()]
    assert {"README.md", "config.json", "tokenizer.json", "model.safetensors.index.json"} <= {
        str(f) for f in files
    }
    for f in files:
        assert f"{tmp}/{f}" in synced, f
    assert tmp in synced  # the folder itself
    assert ("fsync", str(tmp_path)) in events[renames[0] :]  # the parent, after the rename


@pytest.mark.parametrize("have_exchange", [True, False])
def test_force_replaces_in_one_exchange_or_two_renames(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, have_exchange: bool
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    calls: list[bool] = []
    real = atomic.exchange

    def spy(a: Path, b: Path) -> bool:
        ok = real(a, b) if have_exchange else False
        calls.append(ok)
        return ok

    monkeypatch.setattr(atomic, "exchange", spy)
    assert sgmerge("interpolate", src, src, "-o", dest, "-q", "--force") == 0
    assert not (dest / "old.txt").exists()
    with safe_open(dest / "model.safetensors", "pt") as h:
        assert torch.equal(h.get_tensor("w3"), torch.full((64, 64), 3.0))
    assert calls == [have_exchange] or (have_exchange and calls == [False])  # fs without it
    assert [p for p in tmp_path.iterdir() if TMP_TAG in p.name] == []


def test_exchange_swaps_two_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not atomic.exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this file system")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_stale_temporaries_of_dead_runs_in_the_folder_are_removed(
    src: Path, tmp_path: Path
) -> None:
    dead = tmp_path / f".other{TMP_TAG}{DEAD_PID}-abcd1234"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"x" * 1000)
    dead_old = tmp_path / f".other{TMP_TAG}{DEAD_PID}-old"
    dead_old.write_text("an old output left by a kill between the renames")
    alive = tmp_path / f".other{TMP_TAG}{os.getppid()}-abcd1234"
    alive.mkdir()
    foreign = tmp_path / f".fisher.safetensors{TMP_TAG}12345678"  # no PID- in the name
    foreign.write_text("x")
    assert sgmerge("interpolate", src, src, "-o", tmp_path / "merged", "-q") == 0
    assert not dead.exists() and not dead_old.exists()
    assert alive.exists() and foreign.exists()


def test_a_single_file_output_is_fsynced_renamed_and_never_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`atomic_file` (the Fisher file's writer): a PID-named temporary, fsynced before the
    rename, readable like a plain file; an error leaves neither the destination nor a temporary,
    and a dead run's temporary file beside it is removed."""
    from mergekit_sg.tune.fisher import load_fisher, save_fisher

    dead = tmp_path / f".fisher.safetensors{TMP_TAG}{DEAD_PID}-x1y2"
    dead.write_bytes(b"half")
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    out = tmp_path / "fisher.safetensors"
    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_fisher(out, t, {"n": 1})
    assert torch.equal(load_fisher(out)["w"], t["w"])
    assert (out.stat().st_mode & 0o777) == 0o666 & ~atomic._umask()
    assert any(TMP_TAG in Path(p).name and f"{TMP_TAG}{os.getpid()}-" in p for p in synced)
    assert str(tmp_path) in synced  # the folder, after the rename
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fisher.safetensors"]

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("mergekit_sg.tune.fisher.store.save_file", boom)
    with pytest.raises(RuntimeError):
        save_fisher(tmp_path / "other.safetensors", t, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fisher.safetensors"]
