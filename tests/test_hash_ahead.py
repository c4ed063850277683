"""The sources' SHA-256 started with the command (cli/early.py, io.hashing.hash_ahead): the
digests are the files' own, each file is hashed once however many threads ask for it, a file
in flight is skipped by the hash-ahead thread and waited for by the command, and the command
lines of `merge` and `interpolate` name the right files (never the destination)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from mergekit_sg.cli import early
from mergekit_sg.cli.app import main
from mergekit_sg.io import hashing


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fresh process memo, and every digest computed counted (fd per call), each one slow
    enough that two threads asking for one file overlap."""
    monkeypatch.setattr(hashing, "_memo", {})
    calls: list[int] = []
    real = hashing._digest

    def slow(fd: int) -> str:
        calls.append(fd)
        time.sleep(0.05)
        return real(fd)

    monkeypatch.setattr(hashing, "_digest", slow)
    return calls


def _blob(path: Path, n: int, seed: int) -> Path:
    path.write_bytes(bytes((seed + 7 * i) % 251 for i in range(n)))
    return path


def test_two_threads_hash_a_file_once(tmp_path: Path, counted: list[int]) -> None:
    f = _blob(tmp_path / "w.safetensors", 100_000, 1)
    got: list[str] = []

    def ask() -> None:
        fd = os.open(f, os.O_RDONLY)
        try:
            got.append(hashing.fd_sha256(fd, f))
        finally:
            os.close(fd)

    ts = [threading.Thread(target=ask) for _ in range(3)] + [
        threading.Thread(target=lambda: got.append(hashing.file_sha256(f)))
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [_sha(f)] * 4
    assert len(counted) == 1
    # and from the cache file in a later process (no memo)
    cache = json.loads(hashing.cache_file().read_text())
    assert _sha(f) in cache.values()


def test_hash_ahead_fills_the_cache_last_file_first(
    tmp_path: Path, counted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [_blob(tmp_path / f"m-{i}.safetensors", 50_000 + i, i) for i in range(3)]
    order: list[str] = []
    real = hashing._digest

    def spy(fd: int) -> str:
        order.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(hashing, "_digest", spy)
    hashing.hash_ahead(files).join(timeout=30)
    assert order == [str(f.resolve()) for f in reversed(files)]
    assert [hashing.file_sha256(f) for f in files] == [_sha(f) for f in files]
    assert len(order) == 3  # the later asks came from the memo


def test_hash_ahead_skips_a_file_in_flight_a_missing_one_and_a_fifo(
    tmp_path: Path, counted: list[int]
) -> None:
    busy = _blob(tmp_path / "busy.safetensors", 10_000, 3)
    other = _blob(tmp_path / "other.safetensors", 10_000, 4)
    st = busy.stat()
    key = hashing._fd_key(busy.resolve(), st)
    hashing._in_flight[key] = threading.Event()  # another thread "is hashing" it
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # no writer: a blocking open would never return
    try:
        t = hashing.hash_ahead([busy, tmp_path / "gone.safetensors", fifo, other])
        t.join(timeout=30)
        assert not t.is_alive()  # did not wait for the busy file
        assert len(counted) == 1  # `other` only
    finally:
        hashing._in_flight.pop(key).set()
    assert hashing.file_sha256(busy) == _sha(busy)


def test_a_file_changed_after_hashing_is_hashed_again(tmp_path: Path, counted: list[int]) -> None:
    f = _blob(tmp_path / "w.safetensors", 20_000, 5)
    first = hashing.file_sha256(f)
    _blob(f, 20_001, 6)
    assert hashing.file_sha256(f) == _sha(f) != first
    assert len(counted) == 2


def test_command_lines_name_the_sources(tmp_path: Path) -> None:
    pre, ft, out = tmp_path / "pre", tmp_path / "ft", tmp_path / "out"
    for d in (pre, ft, out):
        d.mkdir()
    shards = [_blob(pre / f"model-{i}.safetensors", 10, i) for i in range(2)]
    single = _blob(tmp_path / "ft.safetensors", 10, 9)
    _blob(ft / "model.safetensors", 10, 7)
    _blob(ft / "notes.txt", 10, 8)
    _blob(out / "model.safetensors", 10, 8)  # an old output: no source
    cfg = tmp_path / "ties.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "merge_method": "ties",
                "base_model": str(pre),
                "models": [{"model": str(single)}, {"model": "org/hub-model"}, str(ft)],
            }
        )
    )
    assert early.sources(["merge", "-o", str(out), str(cfg), "--force"]) == [
        *shards,
        single,
        ft / "model.safetensors",
    ]
    assert early.sources(["merge", str(cfg), "--help"]) == []
    assert early.sources(["interpolate", "-o", str(out), str(pre), str(single)]) == [
        *shards,
        single,
    ]
    assert early.sources(["interpolate", "--out", str(out), str(ft), "org/x", "--alpha", "1"]) == [
        ft / "model.safetensors"
    ]
    assert early.sources(["scan", str(pre)]) == []
    bad = tmp_path / "bad.yml"
    bad.write_text("models: [unclosed")
    early.start(["merge", str(bad), "-o", str(out)])  # no error here: the command says it
    assert early.sources(["merge", str(tmp_path / "nothing.yml")]) == []


def test_merge_command_hashes_each_source_once(tmp_path: Path, counted: list[int]) -> None:
    """Through main(): the hash-ahead thread and the merge's own hashing share the work, and
    the card's hashes are the files' own."""
    import torch

    paths = []
    for i in range(3):
        d = tmp_path / f"m{i}"
        d.mkdir()
        g = torch.Generator().manual_seed(i)
        save_file(
            {f"w{j}": torch.randn(64, 32, generator=g) for j in range(4)},
            str(d / "model.safetensors"),
        )
        paths.append(d)
    cfg = tmp_path / "ta.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "merge_method": "task_arithmetic",
                "base_model": str(paths[0]),
                "models": [{"model": str(p), "parameters": {"weight": 0.5}} for p in paths[1:]],
            }
        )
    )
    assert main(["merge", str(cfg), "-o", str(tmp_path / "out"), "-q"]) == 0
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as h:
        rec = json.loads(h.metadata()["sgmerge.recipe"])
    shas = {s["ref"]: s["sha256"]["model.safetensors"] for s in rec["sources"].values()}
    assert shas == {str(p): _sha(p / "model.safetensors") for p in paths}
    assert len(counted) == 3
