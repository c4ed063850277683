"""TIES statistics computed ahead (merge/early_stats.py, started by cli/early.py while torch
imports): the top sets it computes are the ones the merge would compute, so a merge that takes
them writes the same bytes; a set is only ever taken for the very bytes it was computed from;
the merge waits for a set in flight and computes what the pass does not have; and the command
lines and configs it starts for."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from mergekit_sg.cli import early
from mergekit_sg.merge import early_stats
from mergekit_sg.merge.merge import merge
from mergekit_sg.merge.methods import native

pytestmark = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.reason()}"
)

LARGE = {"a.weight": ((300, 256), torch.bfloat16), "b.weight": ((256, 300), torch.float32)}


def _checkpoint(d: Path, seed: int, base: dict[str, torch.Tensor] | None) -> dict:
    """Two shards: the large tensors (bfloat16 and float32, tied magnitudes among them) and a
    small one the bracket select does not take."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (shape, dtype) in LARGE.items():
        if base is None:
            sd[name] = torch.randn(shape, generator=g).mul_(0.02).to(dtype)
        else:  # few distinct steps: many tied |tau|
            step = torch.randint(-40, 41, shape, generator=g).float().mul_(1e-3)
            sd[name] = (base[name].float() + step).to(dtype)
    sd["c.bias"] = torch.randn(64, generator=g)
    d.mkdir(parents=True)
    shards = {
        "model-00001-of-00002.safetensors": ["a.weight"],
        "model-00002-of-00002.safetensors": ["b.weight", "c.bias"],
    }
    for file, names in shards.items():
        save_file({n: sd[n] for n in names}, d / file)
    index = {"metadata": {}, "weight_map": {n: f for f, ns in shards.items() for n in ns}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return sd


@pytest.fixture
def ties_config(tmp_path: Path) -> Path:
    base = _checkpoint(tmp_path / "base", 0, None)
    _checkpoint(tmp_path / "ft1", 1, base)
    _checkpoint(tmp_path / "ft2", 2, base)
    cfg = {
        "merge_method": "ties",
        "base_model": str(tmp_path / "base"),
        "parameters": {"density": 0.5},
        "models": [
            {"model": str(tmp_path / "ft1"), "parameters": {"density": 0.3, "weight": 1.0}},
            {"model": str(tmp_path / "ft2"), "parameters": {"weight": 0.7}},
        ],
    }
    path = tmp_path / "ties.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> early_stats._Registry:
    reg = early_stats._Registry()
    monkeypatch.setattr(early_stats, "REGISTRY", reg)
    return reg


def _bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.safetensors"))}


def test_sets_computed_ahead_merge_to_the_same_bytes(
    ties_config: Path, registry: early_stats._Registry, tmp_path: Path
) -> None:
    want = merge(ties_config, tmp_path / "plain")
    assert registry.hits == 0  # nothing was computed ahead: the merge computed every set
    ties = early.ties_stats(["merge", str(ties_config), "-o", str(tmp_path / "ahead")])
    assert ties is not None
    base, models = ties
    assert [p.parent.name for p in base] == ["base", "base"]
    assert [(files[0].parent.name, d) for files, d in models] == [("ft1", 0.3), ("ft2", 0.5)]
    early_stats.start_ties(*ties).join()
    assert len(registry.done) == 4  # 2 large tensors x 2 fine-tunes; c.bias is too small
    got = merge(ties_config, tmp_path / "ahead")
    assert registry.hits == 4 and not registry.done and not registry.flight
    assert _bytes(got.out) == _bytes(want.out)


def test_the_command_line_merge_writes_the_same_bytes(
    ties_config: Path, registry: early_stats._Registry, tmp_path: Path
) -> None:
    """What a user runs: `sgmerge merge` starts the pass itself (however the race with the
    merge goes, the bytes are those of a merge without it)."""
    from mergekit_sg.cli.app import main

    want = merge(ties_config, tmp_path / "plain")
    assert main(["merge", str(ties_config), "-o", str(tmp_path / "cli"), "-q"]) == 0
    assert _bytes(tmp_path / "cli") == _bytes(want.out)


def test_a_changed_file_takes_nothing_computed_for_the_old_bytes(
    ties_config: Path, registry: early_stats._Registry, tmp_path: Path
) -> None:
    ties = early.ties_stats(["merge", str(ties_config)])
    assert ties is not None
    early_stats.start_ties(*ties).join()
    time.sleep(0.01)  # a new mtime as well as a new inode
    base = {}
    for f in sorted((tmp_path / "base").glob("*.safetensors")):
        base.update(load_file(f))
    shutil.rmtree(tmp_path / "ft1")
    _checkpoint(tmp_path / "ft1", 9, base)  # other bytes, same names and shapes
    got = merge(ties_config, tmp_path / "ahead")
    assert registry.hits == 2  # ft2's sets only
    registry.done.clear()
    want = merge(ties_config, tmp_path / "plain")
    assert _bytes(got.out) == _bytes(want.out)


def test_take_waits_for_a_set_in_flight_and_not_for_an_abandoned_one(
    registry: early_stats._Registry,
) -> None:
    loc = (1, 2, 3, 4, 5, 6, 1)
    key = ("top", loc, loc, 100, 10)
    assert registry.claim(key) and not registry.claim(key)
    got: list = []
    t = threading.Thread(target=lambda: got.append(early_stats.take_top(loc, loc, 100, 10)))
    t.start()
    time.sleep(0.05)
    assert t.is_alive()  # waiting for the set in flight
    marker = object()
    registry.publish(key, marker)  # type: ignore[arg-type]
    t.join(5)
    assert got == [(True, marker)] and registry.hits == 1
    other = ("top", loc, loc, 100, 11)
    assert registry.claim(other)
    t = threading.Thread(target=lambda: got.append(early_stats.take_top(loc, loc, 100, 11)))
    t.start()
    registry.abandon([other])  # the pass failed: the waiting merge computes it itself
    t.join(5)
    assert got[-1] == (False, None)
    registry.begin()  # while a pass runs, a key the merge computed itself is left alone
    assert early_stats.take_top(loc, loc, 100, 12) == (False, None)
    assert not registry.claim(("top", loc, loc, 100, 12))
    registry.end()  # and forgotten when no pass runs (nothing grows between merges)
    assert not registry.skip
    assert early_stats.take_top(loc, loc, 100, 13) == (False, None) and not registry.skip


def test_command_lines_and_configs_it_starts_for(tmp_path: Path, ties_config: Path) -> None:
    argv = ["merge", str(ties_config), "-o", str(tmp_path / "o")]
    assert early.ties_stats(argv) is not None
    assert early.ties_stats([*argv, "--param", "lambda=0.5,1"]) is None  # a grid: not ahead
    assert early.ties_stats([*argv, "--help"]) is None
    assert early.ties_stats(["interpolate", str(tmp_path / "base"), "x"]) is None
    assert early.ties_stats(["merge", str(tmp_path / "missing.yml")]) is None
    cfg = yaml.safe_load(ties_config.read_text())
    for change, want in [
        ({"merge_method": "dare_ties"}, None),  # not a magnitude method
        ({"parameters": {"density": [0.2, 0.8]}}, ["ft1"]),  # a gradient: ft2 left out
        ({"parameters": {}}, ["ft1"]),  # ft2 has no density: nothing to trim
        ({"base_model": "org/hub-model"}, None),  # not local
    ]:
        path = tmp_path / "other.yml"
        path.write_text(yaml.safe_dump({**cfg, **change}))
        got = early.ties_inputs(path)
        assert (None if got is None else [f[0].parent.name for f, _ in got[1]]) == want, change


def test_a_fifo_named_like_a_shard_is_not_waited_on(tmp_path: Path) -> None:
    """The pass reads headers before any merge: a FIFO among the weight files (nobody
    writing) is skipped at once, never a thread stuck in open()."""
    import os

    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        early_stats.read_header(fifo)


@pytest.fixture
def dare_config(ties_config: Path) -> Path:
    """The ties fixture's checkpoints as a dare_ties merge with a seed; the base listed among
    the models too (the merge leaves it out of the slots, so must the pass)."""
    cfg = yaml.safe_load(ties_config.read_text())
    cfg["merge_method"] = "dare_ties"
    cfg["seed"] = 7
    cfg["models"].insert(0, {"model": cfg["base_model"]})
    path = ties_config.parent / "dare.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("budget", [64 << 20, 0])
def test_dare_sums_computed_ahead_merge_to_the_same_bytes(
    dare_config: Path,
    registry: early_stats._Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    budget: int,
) -> None:
    """DARE's rescale sums (and, where the budget has room, the keep bits) computed ahead
    give the bytes of a merge that computes them itself: the same kernel call over the same
    bytes with the same draw (seed, tensor name, slot)."""
    import gc

    from mergekit_sg.merge.methods import draws

    want = merge(dare_config, tmp_path / "plain")
    monkeypatch.setattr(draws, "BITS_BUDGET", budget)  # 0: the chunk kernel draws again
    dare = early.dare_stats(["merge", str(dare_config), "-o", str(tmp_path / "ahead")])
    assert dare is not None
    base, models, seed = dare
    assert [p.parent.name for p in base] == ["base", "base"]
    assert [(files[0].parent.name, m) for files, m in models] == [
        ("ft1", (1, 0.3)),
        ("ft2", (2, 0.5)),
    ]
    assert seed == 7
    early_stats.start_dare(*dare).join()
    assert len(registry.done) == 4  # 2 large tensors x 2 fine-tunes
    held = [v[2] is not None for v in registry.done.values()]
    assert all(held) if budget else not any(held)
    got = merge(dare_config, tmp_path / "ahead")
    assert registry.hits == 4 and not registry.done and not registry.flight
    assert _bytes(got.out) == _bytes(want.out)
    gc.collect()
    assert draws.bits_held() == 0  # the bits went with the merge's statistics


def test_dare_command_line_and_configs_it_starts_for(
    dare_config: Path, registry: early_stats._Registry, tmp_path: Path
) -> None:
    from mergekit_sg.cli.app import main

    want = merge(dare_config, tmp_path / "plain")
    assert main(["merge", str(dare_config), "-o", str(tmp_path / "cli"), "-q"]) == 0
    assert _bytes(tmp_path / "cli") == _bytes(want.out)
    argv = ["merge", str(dare_config)]
    assert early.ties_stats(argv) is None and early.dare_stats(argv) is not None
    assert early.dare_stats([*argv, "--param", "density=0.2,0.4"]) is None
    cfg = yaml.safe_load(dare_config.read_text())
    for change, want_slots in [
        ({"merge_method": "dare_linear"}, [("ft1", 1), ("ft2", 2)]),
        ({"merge_method": "ties"}, None),
        ({"parameters": {"density": 0.5, "rescale": False}}, None),  # no sums to compute
        ({"seed": "7"}, None),  # not a seed the merge takes
        ({"parameters": {}}, [("ft1", 1)]),  # ft2 has no density: nothing dropped
        ({"models": cfg["models"][1:]}, [("ft1", 1), ("ft2", 2)]),  # the base not listed
        ({"models": [cfg["models"][2], cfg["models"][1]]}, [("ft2", 1), ("ft1", 2)]),
    ]:
        path = tmp_path / "other.yml"
        path.write_text(yaml.safe_dump({**cfg, **change}))
        got = early.dare_inputs(path)
        slots = None if got is None else [(f[0].parent.name, m[0]) for f, m in got[1]]
        assert slots == want_slots, change


def test_dare_pass_hands_over_when_the_merge_asks_and_the_bits_budget_is_full(
    dare_config: Path,
    registry: early_stats._Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the merge asks, a full bits budget ends the pass (the merge's statistics, a
    bounded number of tensors ahead, draw the rest with bits): what was done is taken, the
    rest computed by the merge, the same bytes."""
    from mergekit_sg.merge.methods import draws

    want = merge(dare_config, tmp_path / "plain")
    monkeypatch.setattr(draws, "BITS_BUDGET", 2 * ((300 * 256 + 7) // 8))  # one tensor's
    dare = early.dare_stats(["merge", str(dare_config)])
    assert dare is not None
    registry.begin()  # as if a merge had begun and asked
    registry.asked = True
    early_stats.start_dare(*dare).join()
    registry.end()
    assert len(registry.done) == 2 and not registry.flight  # the first tensor's two inputs
    got = merge(dare_config, tmp_path / "ahead")
    assert registry.hits == 2
    assert _bytes(got.out) == _bytes(want.out)
