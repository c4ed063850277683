"""The streaming safetensors writer against `safetensors.torch.save_file` and the format's own
rules, and the multi-alpha pass against single-alpha runs, byte for byte."""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from mergekit_sg.io import (
    TORCH_TO_ST,
    OutSpec,
    StreamingWriter,
    index_json,
    itemsize,
    plan_files,
)
from mergekit_sg.io import safetensors_write as sw
from mergekit_sg.io.pages import aligned_empty
from mergekit_sg.merge import executor
from mergekit_sg.merge import output as output_mod
from mergekit_sg.merge.interpolate import interpolate

DTYPES = [
    torch.float64,
    torch.float32,
    torch.bfloat16,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=g).to(dtype)


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def check_format(path: Path) -> dict:
    """The safetensors rules, read from the raw bytes; returns the parsed header."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw)
    head = raw[8 : 8 + n]
    assert n % 8 == 0, "header must be padded to a multiple of 8 bytes"
    assert head == head.rstrip(b" ") + b" " * (len(head) - len(head.rstrip(b" ")))
    header = json.loads(head)
    meta = header.pop("__metadata__", None)
    if meta is not None:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    spans = []
    for name, spec in header.items():
        assert set(spec) == {"dtype", "shape", "data_offsets"}, name
        b, e = spec["data_offsets"]
        size = {v: itemsize(k) for k, v in TORCH_TO_ST.items()}[spec["dtype"]]
        assert e - b == math.prod(spec["shape"]) * size, name
        assert b % size == 0, f"{name} is not aligned to its element size"
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        assert b == pos, "offsets must start at 0 and be contiguous, with no overlap"
        pos = e
    assert pos == len(raw) - 8 - n, "the last tensor must end at the end of the file"
    return header


def _write_streaming(
    d: Path,
    tensors: dict[str, torch.Tensor],
    max_bytes: int,
    meta: dict[str, str],
    window: int,
    seed: int,
    order: str,
) -> list:
    """Write `tensors` through StreamingWriter in pieces: in file order (the O_DIRECT path),
    shuffled (buffered), or in order but with one piece held back to the end (both); the
    "placed" orders write from aligned buffers in place (`write_placed`)."""
    specs = [OutSpec(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    layouts = plan_files("model", specs, max_bytes, meta)
    w = StreamingWriter(d, layouts, write_behind=window, direct=order != "buffered")
    rng = random.Random(seed)
    pieces = []
    for name, t in tensors.items():
        flat = t.reshape(-1)
        step = max(1, flat.numel() // rng.randint(1, 4))
        for s in range(0, flat.numel(), step):
            pieces.append((name, flat[s : s + step], s * flat.element_size()))
    pieces.sort(key=lambda p: (w.position(p[0]), p[2]))
    if order in ("shuffled", "buffered"):
        rng.shuffle(pieces)
    elif order in ("late", "placed-late") and pieces:
        pieces.append(pieces.pop(rng.randrange(len(pieces))))
    for name, piece, off in pieces:
        if order.startswith("placed"):  # as the executor does: computed where it is written from
            size = piece.element_size()
            nbytes = piece.numel() * size
            start = sw.placed_start(w.position(name)[1] + off, size)
            buf = aligned_empty(start + nbytes, sw.PLACED_ALIGN)
            buf[:start].fill_(0xAB)  # headroom garbage must never reach the file
            buf[start : start + nbytes] = piece.contiguous().view(torch.uint8)
            w.write_placed(name, buf, start, nbytes, off)
        else:
            w.write(name, piece, off)
    w.close()
    return layouts


shapes = st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple) | st.sampled_from(
    [(1500, 1001), (3, 700_001)]  # bigger than the O_DIRECT staging buffer (4 MB)
)
tensor_specs = st.lists(st.tuples(shapes, st.sampled_from(DTYPES)), min_size=1, max_size=8)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    specs=tensor_specs,
    max_bytes=st.sampled_from([1, 64, 300, 10**9]),
    window=st.sampled_from([0, 1, 100, 64 << 20]),
    seed=st.integers(0, 2**16),
    order=st.sampled_from(["in-order", "late", "shuffled", "buffered", "placed", "placed-late"]),
)
def test_same_content_as_save_file_and_valid_format(
    tmp_path_factory: pytest.TempPathFactory,
    specs: list[tuple[tuple[int, ...], torch.dtype]],
    max_bytes: int,
    window: int,
    seed: int,
    order: str,
) -> None:
    d = tmp_path_factory.mktemp("st")
    tensors = {
        f"layer.{i}.w": _random_tensor(shape, dtype, seed + i)
        for i, (shape, dtype) in enumerate(specs)
    }
    meta = {"format": "pt", "note": "x" * (seed % 13)}
    layouts = _write_streaming(d, tensors, max_bytes, meta, window, seed, order)
    seen: set[str] = set()
    for lay in layouts:
        ours = d / lay.filename
        header = check_format(ours)
        names = [n for n in header if n != "__metadata__"]
        assert names and not (set(names) & seen)
        seen |= set(names)
        ref = d / f"ref-{lay.filename}"
        save_file({n: tensors[n] for n in names}, str(ref), metadata=meta)
        with safe_open(ours, "pt") as a, safe_open(ref, "pt") as b:
            assert a.metadata() == b.metadata() == meta
            assert sorted(a.keys()) == sorted(b.keys())
            for n in a.keys():  # noqa: SIM118
                x, y = a.get_tensor(n), b.get_tensor(n)
                assert x.dtype == y.dtype == tensors[n].dtype
                assert x.shape == y.shape == tensors[n].shape
                assert _bytes(x) == _bytes(y) == _bytes(tensors[n])
    assert seen == set(tensors)
    if len(layouts) > 1:
        specs_out = [OutSpec(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
        index = json.loads(index_json(layouts, specs_out, {}))
        assert set(index["weight_map"]) == set(tensors)
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size()
                                                      for t in tensors.values())  # fmt: skip


def test_rewritten_headers_keep_the_data(tmp_path: Path) -> None:
    """Placeholders filled in at the end (same length) leave every tensor byte in place."""
    tensors = {"a": torch.arange(1000, dtype=torch.float32), "b": torch.ones(7, dtype=torch.int8)}
    specs = [OutSpec(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    w = StreamingWriter(tmp_path, plan_files("model", specs, 10**9, {"h": "0" * 64}))
    for k, t in tensors.items():
        w.write(k, t)
    w.rewrite_headers(plan_files("model", specs, 10**9, {"h": "f" * 64}))
    w.close()
    check_format(tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert f.metadata() == {"h": "f" * 64}
        for k, t in tensors.items():
            assert torch.equal(f.get_tensor(k), t)


# --- multi-alpha pass == single-alpha runs ----------------------------------------------------


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    """A small pair with mixed dtypes, multi-chunk tensors and an integer buffer."""
    g = torch.Generator().manual_seed(7)

    def model(shift: float) -> dict[str, torch.Tensor]:
        def r(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
            return (torch.randn(shape, generator=g) + shift).to(dtype)

        return {
            "embed.weight": r(300, 64),
            "layers.0.attn.weight": r(64, 64),
            "layers.0.norm.weight": r(64, dtype=torch.float32),
            "layers.0.mlp.weight": r(129, 64, dtype=torch.float16),
            "layers.1.attn.weight": r(64, 64),
            "position_ids": torch.arange(64, dtype=torch.int64),
        }

    pre, ft = tmp_path / "pre", tmp_path / "ft"
    for d, shift in ((pre, 0.0), (ft, 0.5)):
        d.mkdir()
        tensors = model(shift)
        names = sorted(tensors)
        save_file({k: tensors[k] for k in names[:3]}, str(d / "model-00001-of-00002.safetensors"))
        save_file({k: tensors[k] for k in names[3:]}, str(d / "model-00002-of-00002.safetensors"))
        wm = {k: f"model-0000{1 if i < 3 else 2}-of-00002.safetensors" for i, k in
              enumerate(names)}  # fmt: skip
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    return pre, ft


def _weight_files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.safetensors*"))}


@pytest.mark.parametrize("chunk", [1000, executor.CHUNK_ELEMS])
def test_multi_alpha_equals_single_runs_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(
        output_mod, "execute", functools.partial(executor.execute, chunk_elems=chunk)
    )
    pre, ft = _pair(tmp_path)
    alphas = [0.0, 0.3, 0.5, 1.0]
    kw = {"max_shard_size": "40KB", "model_card": False}
    multi = interpolate(pre, ft, tmp_path / "multi", alpha=alphas, **kw)
    for a in alphas:
        single = interpolate(pre, ft, tmp_path / f"single-{a:g}", alpha=[a], **kw)
        got, want = _weight_files(multi.outputs[a]), _weight_files(single.out)
        assert len(got) >= 3  # two shards and the index at least
        assert got == want, f"alpha={a:g}"
        for name in got:
            if name.endswith(".safetensors"):
                check_format(multi.outputs[a] / name)


def test_values_are_the_formula_rounded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Chunked or not, every value is torch.lerp's float32 result rounded once, and the
    endpoints are the inputs bit for bit."""
    monkeypatch.setattr(output_mod, "execute", functools.partial(executor.execute, chunk_elems=777))
    pre, ft = _pair(tmp_path)
    res = interpolate(pre, ft, tmp_path / "out", alpha=[0.0, 0.25, 1.0], model_card=False)

    def load(d: Path) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for f in d.glob("*.safetensors"):
            with safe_open(f, "pt") as h:
                out.update({k: h.get_tensor(k) for k in h.keys()})  # noqa: SIM118
        return out

    a, b = load(pre), load(ft)
    for alpha, d in res.outputs.items():
        got = load(d)
        for k, t in got.items():
            if not t.is_floating_point():
                assert torch.equal(t, b[k])
                continue
            want = torch.lerp(a[k].float(), b[k].float(), alpha).to(t.dtype)
            assert _bytes(t) == _bytes(want), (k, alpha)
            if alpha in (0.0, 1.0):
                assert _bytes(t) == _bytes(a[k] if alpha == 0.0 else b[k])


# --- O_DIRECT refused: the writer falls back to buffered writes, same bytes -------------------


def _write_in_order(d: Path, tensors: dict[str, torch.Tensor]) -> Path:
    specs = [OutSpec(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    w = StreamingWriter(d, plan_files("model", specs, 10**9, {"k": "v"}))
    for name in sorted(tensors, key=w.position):
        flat = tensors[name].reshape(-1)
        for s in range(0, flat.numel(), 1 << 20):
            w.write(name, flat[s : s + (1 << 20)], s * flat.element_size())
    w.close()
    return d / "model.safetensors"


def _big_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "w": torch.randn(3001, 1000, generator=g).to(torch.bfloat16),  # 6 MB: > one buffer
        "n": torch.randn(77, generator=g),
    }


def _same_as_save_file(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    check_format(path)
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"k": "v"}
        for k, t in tensors.items():
            assert _bytes(f.get_tensor(k)) == _bytes(t)


def test_direct_refused_mid_file_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = {"n": 0}
    real = sw._Direct.flush_aligned

    def flaky(self: sw._Direct) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise sw._NoDirect(memoryview(b""))
        real(self)

    monkeypatch.setattr(sw._Direct, "flush_aligned", flaky)
    tensors = _big_tensors()
    _same_as_save_file(_write_in_order(tmp_path, tensors), tensors)
    assert calls["n"] > 1


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm")
def test_file_system_without_o_direct() -> None:
    d = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        tensors = _big_tensors()
        _same_as_save_file(_write_in_order(d, tensors), tensors)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_placed_writes_fall_back_when_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL in the middle of in-place O_DIRECT writes: the staged tail and the piece are
    written buffered instead, and the file is still exactly save_file's."""
    import errno as _errno
    import os as _os

    real = _os.pwrite
    calls = {"n": 0}

    def flaky(fd: int, data: object, pos: int) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(_errno.EINVAL, "refused")
        return real(fd, data, pos)

    monkeypatch.setattr(sw.os, "pwrite", flaky)
    tensors = _big_tensors()
    specs = [OutSpec(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    w = StreamingWriter(tmp_path, plan_files("model", specs, 10**9, {"k": "v"}))
    for name in sorted(tensors, key=w.position):
        flat = tensors[name].reshape(-1)
        size = flat.element_size()
        for s in range(0, flat.numel(), 1 << 20):
            piece = flat[s : s + (1 << 20)]
            nbytes = piece.numel() * size
            start = sw.placed_start(w.position(name)[1] + s * size, size)
            buf = aligned_empty(start + nbytes, sw.PLACED_ALIGN)
            buf[start : start + nbytes] = piece.view(torch.uint8)
            w.write_placed(name, buf, start, nbytes, s * size)
    w.close()
    assert calls["n"] > 3
    _same_as_save_file(tmp_path / "model.safetensors", tensors)


def test_device_path_logic_gives_the_cpu_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The `--device cuda` code path (chunks sent over, results copied back into the placed
    output buffers, one sync per chunk) run with the CPU as its device: the same bytes as the
    CPU path. The GPU's own kernels are not exercised here (no GPU on the test machines)."""
    pre, ft = _pair(tmp_path)
    kw = {"max_shard_size": "40KB", "model_card": False}
    monkeypatch.setattr(
        output_mod, "execute", functools.partial(executor.execute, chunk_elems=1000)
    )
    want = interpolate(pre, ft, tmp_path / "cpu", alpha=[0.0, 0.3, 0.7], **kw)
    calls = {"n": 0}
    lerp_device = executor._Executor._merge_cuda

    def counted(self: executor._Executor, *a: object) -> None:
        calls["n"] += 1
        lerp_device(self, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(executor._Executor, "_merge_cpu", counted)
    got = interpolate(pre, ft, tmp_path / "dev", alpha=[0.0, 0.3, 0.7], **kw)
    assert calls["n"] > 10  # every interpolated chunk went through the device path
    for a in (0.0, 0.3, 0.7):
        assert _weight_files(got.outputs[a]) == _weight_files(want.outputs[a]), a
