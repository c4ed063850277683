"""The fused C kernels of the task-vector methods (`merge/methods/native`): the same bytes as
the torch code they stand in for, for every method, dtype, option and chunking, with tied
magnitudes, -0.0 and NaN; the counter-based DARE draw identical in C and in torch; the
kernel's bracket select equal to the whole-buffer partition, cut included; and the torch code
taking over when no compiler is found or the kernels are switched off."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mergekit_sg.merge.merge import merge
from mergekit_sg.merge.methods import ChunkCtx, Params, draws, native, tops
from mergekit_sg.merge.methods import select as sel
from mergekit_sg.merge.methods import task_arithmetic as ta

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.reason()}"
)

METHODS = {
    "ties": (ta.Ties, ta.TiesShared, ta.TaskInput),
    "dare_ties": (ta.DareTies, ta.DareShared, ta.TaskInput),
    "dare_linear": (ta.DareLinear, ta.DareShared, ta.TaskInput),
    "breadcrumbs": (ta.Breadcrumbs, ta.GTAShared, ta.BreadcrumbsInput),
    "breadcrumbs_ties": (ta.BreadcrumbsTies, ta.GTAShared, ta.BreadcrumbsInput),
    "task_arithmetic": (ta.TaskArithmetic, ta.GTAShared, ta.TaskInput),
}


@contextlib.contextmanager
def torch_only() -> Iterator[None]:
    native.reset_for_tests(False)
    try:
        yield
    finally:
        native.reset_for_tests()


def _inputs(n: int, k: int, dtype: torch.dtype, levels: int, seed: int) -> list[torch.Tensor]:
    """A base and k fine-tunes whose task vectors take few distinct values (many tied
    magnitudes), with -0.0 sprinkled in."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g).mul_(0.02).to(dtype)
    xs = [base]
    for _ in range(k):
        step = torch.randint(-levels, levels + 1, (n,), generator=g).float().mul_(1e-3)
        x = (base.float() + step).to(dtype)
        x[torch.rand(n, generator=g) < 0.03] = -0.0
        xs.append(x)
    return xs


def _stats(name: str, xs: list[torch.Tensor], shared: dict, per: list[dict], seed: int = 3):
    cls, shared_model, input_model = METHODS[name]
    m = cls()
    p = Params(shared_model(**shared), (None, *(input_model(**q) for q in per)))
    n = xs[0].numel()

    def read(k: int, s: int, c: int) -> torch.Tensor:
        return xs[k][s : s + c].to(torch.float32, copy=True)

    return m, p, m.stats(read, ChunkCtx("layer.w", n, 0, seed), p, len(xs))


def _merge(
    name: str,
    xs: list[torch.Tensor],
    shared: dict,
    per: list[dict],
    chunk: int,
    seed: int = 3,
    stats: object = None,
) -> torch.Tensor:
    """The executor's protocol by hand: statistics through a float32 reader (or `stats`),
    then the chunks in order into an output of the inputs' dtype."""
    m, p, own = _stats(name, xs, shared, per, seed)
    stats = own if stats is None else stats
    n = xs[0].numel()
    out = torch.empty(n, dtype=xs[0].dtype)
    for s in range(0, n, chunk):
        c = min(chunk, n - s)
        m.compute_into(
            out[s : s + c],
            [x[s : s + c] for x in xs],
            p,
            stats,
            ChunkCtx("layer.w", n, s, seed),
            torch.float32,
        )
    return out


@needs_native
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(sorted(METHODS)),
    dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    n=st.sampled_from([3001, 70001, 200003]),
    levels=st.sampled_from([1, 3, 40]),
    weights=st.sampled_from([(1.0, 0.5), (1.0, -0.5, 0.3), (0.7,), (0.3, 0.3, 0.3, 0.3)]),
    density=st.floats(0.05, 1.0),
    shared=st.sampled_from(
        [{}, {"normalize": False}, {"normalize": True, "rescale": True}, {"lambda": -0.7}]
    ),
    chunk=st.sampled_from([97, 1 << 16, 1 << 22]),
)
def test_kernel_bytes_equal_the_torch_code(name, dtype, n, levels, weights, density, shared, chunk):
    xs = _inputs(n, len(weights), dtype, levels, seed=n + levels)
    per = [{"weight": w, "density": min(1.0, density + 0.1 * j)} for j, w in enumerate(weights)]
    *_, st_native = _stats(name, xs, shared, per)
    got = _merge(name, xs, shared, per, chunk)
    with torch_only():
        *_, st_torch = _stats(name, xs, shared, per)
        want = _merge(name, xs, shared, per, chunk)
        same_stats = _merge(name, xs, shared, per, chunk, stats=st_native)
    # the chunk kernel is the torch code's arithmetic exactly
    assert torch.equal(got.view(torch.uint8), same_stats.view(torch.uint8))
    for i, a in (st_native or {}).items():
        b = st_torch[i]
        for ta_, tb in ((a.keep_top, b.keep_top), (a.drop_top, b.drop_top)):
            assert (ta_ is None) == (tb is None)
            if ta_ is not None:
                assert (ta_.value, ta_.ties, ta_.everything, ta_.nothing) == (
                    tb.value, tb.ties, tb.everything, tb.nothing,
                )  # fmt: skip
        # DARE's rescale sums: the kernel adds in 8 lanes, torch in its own order
        assert a.scale == pytest.approx(b.scale, rel=1e-12)
    if all(a.scale == st_torch[i].scale for i, a in (st_native or {}).items()):
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


@needs_native
@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties", "dare_ties"])
def test_kernel_bytes_with_nan_and_inf_inputs(name: str) -> None:
    """NaN and inf in the inputs: the bracket misses, the partition decides, NaN rounds to
    bfloat16 as torch's copy does (0xFFFF)."""
    xs = _inputs(100_000, 2, torch.bfloat16, 3, seed=7)
    xs[1][5] = float("nan")
    xs[2][99] = float("inf")
    xs[0][1234] = float("-inf")
    per = [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}]
    got = _merge(name, xs, {}, per, 4096)
    with torch_only():
        want = _merge(name, xs, {}, per, 4096)
    assert got.isnan().any()
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


@needs_native
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**40),
    slot=st.integers(1, 5),
    start=st.integers(0, 2**33),
    count=st.integers(1, 5000),
    density=st.floats(0.0, 1.0),
)
def test_dare_draw_is_the_same_in_c_and_torch(seed, slot, start, count, density) -> None:
    ctx = ChunkCtx("model.layers.3.mlp.up_proj.weight", start + count, 0, seed)
    got = ta.dare_keep(ctx, slot, start, count, density)
    with torch_only():
        want = ta.dare_keep(ctx, slot, start, count, density)
    assert got.dtype == want.dtype == torch.bool
    assert torch.equal(got, want)


def test_dare_draw_is_bernoulli_and_chunking_free() -> None:
    """Kept fraction within 5 standard deviations of the density; density 1 keeps all; any
    split of the range draws the same mask."""
    n = 400_000
    ctx = ChunkCtx("w", n, 0, 11)
    for d in (0.1, 0.5, 0.9):
        keep = ta.dare_keep(ctx, 1, 0, n, d)
        sd = (d * (1 - d) / n) ** 0.5
        assert abs(float(keep.float().mean()) - d) < 5 * sd
        parts = torch.cat([ta.dare_keep(ctx, 1, s, min(9999, n - s), d) for s in range(0, n, 9999)])
        assert torch.equal(parts, keep)
        assert not torch.equal(keep, ta.dare_keep(ctx, 2, 0, n, d))  # another input, another draw
    assert bool(ta.dare_keep(ctx, 1, 0, n, 1.0).all())
    assert not bool(ta.dare_keep(ctx, 1, 0, n, 0.0).any())


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.sampled_from([70_000, 150_001]),
    levels=st.integers(1, 3000),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_bracket_scan_equals_the_partition(n, levels, frac, seed) -> None:
    """top_set_scan (numpy's scan standing in for the kernel's) gives the partition's set,
    and its cut is the one the ordered walk finds."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, levels, (n,), generator=g).float().mul_(1e-3)
    c = int(frac * n)
    a = w.numpy()

    def scan(lo: float, hi: float, limit: int):
        inside = np.nonzero((a >= lo) & (a <= hi))[0]
        if inside.size > limit:
            return None
        return int((a < lo).sum()), int((a > hi).sum()), a[inside], inside

    got = sel.top_set_scan(n, c, lambda: a[:: sel.sample_step(n)].copy(), scan)
    want = sel.top_set(w.clone(), c)
    if got is None:  # the bracket missed: the caller partitions
        return
    assert (got.value, got.ties, got.everything, got.nothing) == (
        want.value,
        want.ties,
        want.everything,
        want.nothing,
    )
    if not (got.everything or got.nothing or want.all_ties):
        pieces = ((s, w[s : s + 4099].clone()) for s in range(0, n, 4099))
        assert got.cut == sel.resolve_cut(want, pieces).cut
    mask = torch.cat([got.mask(w[s : s + 777], s) for s in range(0, n, 777)])
    assert int(mask.sum()) == c


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    m=st.integers(1, 5000),
    levels=st.integers(1, 70000),
    scale=st.sampled_from([1e-6, 1e-3, 1.0, 3e38]),
    frac=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 1000),
)
def test_radix_kth_equals_numpy_partition(m, levels, scale, frac, seed) -> None:
    """The kernels' kth (radix count over the bit patterns) gives numpy's value and counts,
    ties, zeros, subnormals and huge values included."""
    lib = native.lib()
    if lib is None:
        pytest.skip(native.reason())
    import ctypes

    g = torch.Generator().manual_seed(seed)
    vals = (torch.randint(0, levels, (m,), generator=g).double() * scale / levels).float()
    vals = vals.numpy().copy()
    j = int(frac * m)
    v, more, eq = ctypes.c_float(), ctypes.c_int64(), ctypes.c_int64()
    rc = lib.gta_kth(vals.ctypes.data, m, j, ctypes.byref(v), ctypes.byref(more), ctypes.byref(eq))
    assert rc == 0
    assert (v.value, more.value, eq.value) == sel.kth_numpy(vals, j)


def _files(root: Path, n: int) -> list[Path]:
    xs = _inputs(n, 2, torch.bfloat16, 3, seed=1)
    paths = []
    for i, x in enumerate(xs):
        p = root / f"m{i}.safetensors"
        save_file({"model.w": x.reshape(-1, 100).contiguous(), "b": x[:300].clone()}, p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("method", ["ties", "dare_ties", "task_arithmetic"])
def test_merge_without_a_compiler_gives_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """No C compiler: the torch code merges, with the same bytes as the kernels."""
    paths = _files(tmp_path, 120_000)
    cfg = {
        "merge_method": method,
        "base_model": str(paths[0]),
        "models": [
            {"model": str(paths[1]), "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": str(paths[2]), "parameters": {"weight": 0.5, "density": 0.5}},
        ],
        "dtype": "bfloat16",
    }
    if method == "task_arithmetic":
        for m in cfg["models"]:
            del m["parameters"]["density"]
    a = merge(cfg, tmp_path / "a", model_card=False).out
    monkeypatch.setattr(native.shutil, "which", lambda *_: None)
    native.reset_for_tests()
    try:
        assert not native.available()
        assert "no C compiler" in (native.reason() or "")
        b = merge(cfg, tmp_path / "b", model_card=False).out
    finally:
        monkeypatch.undo()
        native.reset_for_tests()
    ta_, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(ta_) == set(tb)
    for k in ta_:
        assert torch.equal(ta_[k].view(torch.int16), tb[k].view(torch.int16)), k


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGEKIT_SG_NATIVE", "0")
    native.reset_for_tests()
    try:
        assert not native.available()
        assert "MERGEKIT_SG_NATIVE=0" in (native.reason() or "")
    finally:
        monkeypatch.delenv("MERGEKIT_SG_NATIVE")
        native.reset_for_tests()


@needs_native
def test_build_goes_to_the_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh cache: one build, named by the source and CPU; the next load reuses it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.reset_for_tests()
    try:
        assert native.available()
        built = list((tmp_path / "mergekit-sg" / "native").glob("kernels-*.so"))
        assert len(built) == 1
        mtime = built[0].stat().st_mtime_ns
        native.reset_for_tests()
        assert native.available()
        assert built[0].stat().st_mtime_ns == mtime
        assert not list((tmp_path / "mergekit-sg" / "native").glob(".build-*"))
    finally:
        monkeypatch.undo()
        native.reset_for_tests()


@needs_native
def test_the_kernel_select_is_used_on_large_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a large tensor with spread magnitudes the kernel's bracket select decides (not the
    partition), and the bytes still equal the torch code's."""
    seen: list[object] = []
    real = ta.top_set_scan

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        seen.append(r := real(*a, **k))
        return r

    monkeypatch.setattr(ta, "top_set_scan", spy)
    xs = _inputs(300_000, 2, torch.bfloat16, 40, seed=5)
    per = [{"weight": 1.0, "density": 0.3}, {"weight": 0.5, "density": 0.7}]
    got = _merge("ties", xs, {}, per, 1 << 16)
    assert seen and all(s is not None for s in seen)
    with torch_only():
        want = _merge("ties", xs, {}, per, 1 << 16)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("t", [0.3, 0.77, -0.2])
def test_slerp_kernel_equals_the_torch_code(dtype: torch.dtype, t: float) -> None:
    """SLERP's chunk kernel is torch's mul_ then add_(alpha=) (an fma) bit for bit; its
    statistics kernel gives the same cos up to the order of the float64 additions."""
    from mergekit_sg.merge.methods.geometric import Slerp, SlerpParams

    xs = _inputs(150_001, 1, dtype, 40, seed=3)
    m, p, n = Slerp(), Params(SlerpParams(t=t), (None, None)), 150_001

    class Raw:
        def __call__(self, k: int, s: int, c: int) -> torch.Tensor:
            return xs[k][s : s + c].to(torch.float32, copy=True)

        def raw(self, k: int, s: int, c: int, scratch: object = None) -> torch.Tensor:
            return xs[k][s : s + c]

    ctx = ChunkCtx("w", n, 0, 0)
    cos = m.stats(Raw(), ctx, p, 2)
    with torch_only():
        want_cos = m.stats(Raw(), ctx, p, 2)
    assert cos == pytest.approx(want_cos, rel=1e-12, abs=1e-15)
    outs = []
    for on in (True, False):
        out = torch.empty(n, dtype=dtype)
        with contextlib.nullcontext() if on else torch_only():
            for s in range(0, n, 4097):
                c = min(4097, n - s)
                m.compute_into(
                    out[s : s + c], [x[s : s + c] for x in xs], p, want_cos, ctx, torch.float32
                )
        outs.append(out)
    assert torch.equal(outs[0].view(torch.uint8), outs[1].view(torch.uint8))


@needs_native
@pytest.mark.parametrize("name", ["ties", "dare_linear", "breadcrumbs_ties"])
def test_lambda_grid_in_one_kernel_call_equals_one_output_at_a_time(name: str) -> None:
    """compute_many with outputs differing only in lambda (one kernel call) gives each
    output's bytes as the torch code computes it alone."""
    cls, shared_model, input_model = METHODS[name]
    m = cls()
    xs = _inputs(100_003, 2, torch.bfloat16, 20, seed=9)
    per = (None, input_model(weight=1.0, density=0.4), input_model(weight=0.6, density=0.7))
    lams = [0.0, 0.35, 1.0, -0.5, 1.7]
    ps = [Params(shared_model(**{"lambda": lam}), per) for lam in lams]
    *_, stats = _stats(name, xs, {}, [q.model_dump() for q in per[1:]])
    n = xs[0].numel()
    outs = [torch.empty(n, dtype=torch.bfloat16) for _ in lams]
    for s in range(0, n, 8191):
        c = min(8191, n - s)
        m.compute_many(
            [o[s : s + c] for o in outs],
            [x[s : s + c] for x in xs],
            ps,
            [stats] * len(ps),
            ChunkCtx("layer.w", n, s, 3),
            torch.float32,
        )
    with torch_only():
        for o, p in zip(outs, ps, strict=True):
            want = torch.empty(n, dtype=torch.bfloat16)
            for s in range(0, n, 8191):
                c = min(8191, n - s)
                m.compute_into(
                    want[s : s + c],
                    [x[s : s + c] for x in xs],
                    p,
                    stats,
                    ChunkCtx("layer.w", n, s, 3),
                    torch.float32,
                )
            assert torch.equal(o.view(torch.int16), want.view(torch.int16))


def test_float64_and_float16_inputs_merge_as_without_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inputs the kernels do not read (float64, float16) are converted by torch first; the
    merge is the torch code's."""
    xs = _inputs(90_000, 2, torch.float32, 30, seed=4)
    paths = []
    for i, (x, dt) in enumerate(
        zip(xs, [torch.float64, torch.float16, torch.float64], strict=True)
    ):
        p = tmp_path / f"m{i}.safetensors"
        save_file({"w": x.to(dt).reshape(-1, 90).contiguous()}, p)
        paths.append(p)
    cfg = {
        "merge_method": "ties",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(paths[1]), "parameters": {"weight": 1.0, "density": 0.3}},
            {"model": str(paths[2]), "parameters": {"weight": 0.5, "density": 0.6}},
        ],
        "dtype": "float32",
    }
    a = load_file(merge(cfg, tmp_path / "a", model_card=False).out / "model.safetensors")
    with torch_only():
        b = load_file(merge(cfg, tmp_path / "b", model_card=False).out / "model.safetensors")
    assert torch.equal(a["w"].view(torch.int32), b["w"].view(torch.int32))


@needs_native
def test_merge_reads_safetensors_in_place_for_the_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the executor, a safetensors source's statistics come from the one-pass kernel
    over the mapped files (no |tau| buffer), one pass over the base for every input and set,
    with the torch code's bytes."""
    lib = native.lib()
    calls: list[tuple[int, int]] = []
    real = lib.gta_absdiff_bracket_n

    def spy(*a):  # type: ignore[no-untyped-def]
        calls.append((a[3], a[4]))  # (sets scanned, elements)
        return real(*a)

    monkeypatch.setattr(lib, "gta_absdiff_bracket_n", spy)
    paths = _files(tmp_path, 120_000)
    cfg = {
        "merge_method": "breadcrumbs_ties",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(p), "parameters": {"weight": w, "density": 0.5, "gamma": 0.05}}
            for p, w in zip(paths[1:], (1.0, 0.5), strict=True)
        ],
        "dtype": "bfloat16",
    }
    a = load_file(merge(cfg, tmp_path / "a", model_card=False).out / "model.safetensors")
    # the whole tensor in one call, straight from the mapping: 2 inputs, 2 sets each
    assert calls == [(4, 120_000)]
    monkeypatch.undo()
    with torch_only():
        b = load_file(merge(cfg, tmp_path / "b", model_card=False).out / "model.safetensors")
    for k in a:
        assert torch.equal(a[k].view(torch.int16), b[k].view(torch.int16)), k


@pytest.mark.parametrize("kernels", [True, False])
def test_ties_names_nonfinite_inputs_with_and_without_kernels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernels: bool
) -> None:
    """The fused kernel notes NaN and inf as it reads the inputs (the reader does not check
    them first): the same warning as the reader's check gives, and --strict refuses."""
    import yaml

    from mergekit_sg.cli.app import main

    g = torch.Generator().manual_seed(5)
    sds = [{k: torch.randn(200, generator=g) for k in ("a", "b", "c")} for _ in range(3)]
    sds[0]["a"][7] = float("nan")  # the base
    sds[2]["c"][150] = float("inf")  # the second fine-tune
    paths = []
    for i, sd in enumerate(sds):
        save_file(sd, tmp_path / f"m{i}.safetensors")
        paths.append(str(tmp_path / f"m{i}.safetensors"))
    cfg = tmp_path / "ties.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "merge_method": "ties",
                "base_model": paths[0],
                "models": [
                    {"model": p, "parameters": {"density": 0.5, "weight": 1.0}} for p in paths[1:]
                ],
            }
        )
    )
    ctx = contextlib.nullcontext() if kernels else torch_only()
    with ctx:
        capsys.readouterr()
        rc = main(["merge", str(cfg), "-o", str(tmp_path / "out"), "-q"])
        err = capsys.readouterr().err
        assert rc == 0, err
        warn = [ln for ln in err.splitlines() if "NaN or inf" in ln]
        assert len(warn) == 1 and "2 input tensor(s)" in warn[0], err
        assert "'a (base)'" in warn[0] and "'c (models[1])'" in warn[0], warn[0]
        rc = main(["merge", str(cfg), "-o", str(tmp_path / "out2"), "--strict"])
        err = capsys.readouterr().err
        assert rc == 2 and "NaN or inf" in err and not (tmp_path / "out2").exists()


class _MappedReader:
    """The executor's reader as the statistics see it for safetensors sources: each slot's
    whole stored tensor in place (`mapped`), pieces as stored (`raw`), in float32 (call), and
    a scratch arena reused from call to call (`scratch`; None: no arena)."""

    def __init__(self, xs: list[torch.Tensor], arena: bool = True) -> None:
        self.xs = xs
        self._arena = torch.empty(0, dtype=torch.uint8)
        if not arena:
            self.scratch = None  # type: ignore[method-assign,assignment]

    def __call__(self, k: int, s: int, c: int) -> torch.Tensor:
        return self.xs[k][s : s + c].to(torch.float32, copy=True)

    def raw(self, k: int, s: int, c: int, scratch: object = None) -> torch.Tensor:
        return self.xs[k][s : s + c]

    def mapped(self, k: int) -> tuple[np.ndarray, torch.dtype]:
        return self.xs[k].view(torch.uint8).numpy(), self.xs[k].dtype

    def scratch(self, nbytes: int) -> torch.Tensor:
        if self._arena.numel() < nbytes:
            self._arena = torch.empty(nbytes, dtype=torch.uint8)
        return self._arena[:nbytes]


@needs_native
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(["ties", "breadcrumbs", "breadcrumbs_ties", "dare_ties", "dare_linear"]),
    n=st.sampled_from([3001, 70001, 200003]),
    levels=st.sampled_from([1, 3, 40, 3000]),
    weights=st.sampled_from([(1.0, 0.5), (1.0, -0.5, 0.3), (0.7,)]),
    density=st.floats(0.05, 1.0),
    f32_slot=st.integers(0, 4),
    nan=st.booleans(),
    idx64=st.booleans(),
    small_cap=st.booleans(),
    arena=st.booleans(),
)
def test_stats_from_mapped_tensors_give_the_same_bytes(
    name, n, levels, weights, density, f32_slot, nan, idx64, small_cap, arena
) -> None:
    """The statistics from tensors read in place (one pass over the base for every input and
    set: `_scan_tops`, `gta_dare_sums_n`) merge to the bytes of those from float32 pieces,
    with bfloat16 and float32 slots mixed, tied magnitudes, NaN (the bracket misses), int64
    candidate indices, and a first scan with too little room for its candidates."""
    xs = _inputs(n, len(weights), torch.bfloat16, levels, seed=n + levels)
    if f32_slot < len(xs):
        xs[f32_slot] = xs[f32_slot].float()
    if nan:
        xs[1][n // 3] = float("nan")
    per = [
        {"weight": w, "density": min(1.0, density + 0.1 * j), "gamma": 0.02}
        for j, w in enumerate(weights)
    ]
    if name in ("ties", "dare_ties", "dare_linear"):
        per = [{k: v for k, v in q.items() if k != "gamma"} for q in per]
    m, p, plain = _stats(name, xs, {}, per)
    with pytest.MonkeyPatch.context() as mp:
        if idx64:
            mp.setattr(tops, "IDX32_MAX", 0)
        if small_cap:
            mp.setattr(tops, "first_cap", lambda n: 16)  # the in-place scan's
            mp.setattr(ta, "first_cap", lambda n: 16)  # the buffer's (gather)
        inplace = m.stats(_MappedReader(xs, arena), ChunkCtx("layer.w", n, 0, 3), p, len(xs))
    for i, a in (plain or {}).items():
        b = inplace[i]
        assert b.scale == a.scale  # DARE's sums: one piece either way, same order
        for x, y in ((a.keep_top, b.keep_top), (a.drop_top, b.drop_top)):
            assert (x is None) == (y is None)
            if x is not None and y is not None:
                # the same threshold (NaN where both take NaN: `value == value` is then False)
                assert x.value == y.value or (math.isnan(x.value) and math.isnan(y.value))
                assert (x.ties, x.everything, x.nothing, x.all_ties) == (
                    y.ties, y.everything, y.nothing, y.all_ties,
                )  # fmt: skip
                if not (x.everything or x.nothing or x.all_ties):
                    assert x.cut == y.cut
    got = _merge(name, xs, {}, per, 1 << 16, stats=inplace)
    want = _merge(name, xs, {}, per, 1 << 16, stats=plain)
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


@needs_native
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    m=st.integers(1, 5000),
    levels=st.integers(1, 70000),
    scale=st.sampled_from([1e-6, 1e-3, 1.0, 3e38]),
    fracs=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=3),
    seed=st.integers(0, 1000),
)
def test_radix_ranks_equal_numpy_partition(m, levels, scale, fracs, seed) -> None:
    """The kernels' ranks (one shared high count, then a low count per rank) give the order
    statistics numpy's partition gives; NaN makes them decline (the caller partitions)."""
    g = torch.Generator().manual_seed(seed)
    vals = (torch.randint(0, levels, (m,), generator=g).double() * scale / levels).float()
    vals = vals.numpy().copy()
    ranks = sorted(int(f * m) for f in fracs)
    got = tops.ranks_native(native.lib(), vals, ranks)
    assert got == [np.partition(vals, r)[r] for r in ranks]
    vals[m // 2] = np.nan
    assert tops.ranks_native(native.lib(), vals, ranks) is None


@needs_native
@pytest.mark.parametrize("idx_t", [np.int32, np.int64])
def test_nth_equal_is_the_boolean_select(idx_t: type) -> None:
    """gta_nth_equal: the flat index of the r-th candidate equal to v, as idx[vals == v][r]."""
    rng = np.random.default_rng(4)
    vals = rng.integers(0, 5, 3000).astype(np.float32)
    idx = np.sort(rng.choice(10**6, 3000, replace=False)).astype(idx_t)
    for v in (0.0, 2.0, 4.0):
        want = idx[vals == v]
        for r in (0, 1, len(want) // 2, len(want) - 1):
            assert tops.nth_equal_native(native.lib(), vals, idx, v, r) == int(want[r])


@needs_native
@pytest.mark.parametrize("m,step", [(1, 1), (100, 7), (5000, 33)])
def test_strided_sample_is_the_abs_difference_every_step(m: int, step: int) -> None:
    """gta_absdiff_strided_n (the bracket's sample, with its prefetches ahead): out[i * m + k]
    = |x_i[k * step] - base[k * step]| in float32, bfloat16 and float32 inputs mixed, the
    last sample at the tensor's end (nothing read or prefetched past it matters)."""
    import ctypes

    g = torch.Generator().manual_seed(m)
    n = (m - 1) * step + 1
    base = torch.randn(n, generator=g).to(torch.bfloat16)
    xs = [torch.randn(n, generator=g).to(torch.bfloat16), torch.randn(n, generator=g)]
    out = np.empty(2 * m, np.float32)
    ptrs = (ctypes.c_void_p * 2)(*[x.data_ptr() for x in xs])
    codes = (ctypes.c_int32 * 2)(native.DT_BF16, native.DT_F32)
    native.lib().gta_absdiff_strided_n(
        base.data_ptr(), native.DT_BF16, ptrs, codes, 2, m, step, out.ctypes.data
    )
    for i, x in enumerate(xs):
        want = (x.float()[::step] - base.float()[::step]).abs().numpy()
        assert np.array_equal(out[i * m : (i + 1) * m], want)


def _dare_sums_reference(
    b: torch.Tensor, x: torch.Tensor, start: int, key: int, t: int
) -> tuple[float, float]:
    """DARE's rescale sums as defined: d = |x - base| and d * keep in float32, each summed in
    double in 8 lanes (lane l takes elements l, l + 8, ... in order), the lanes added in
    order."""
    d = (x.float() - b.float()).abs()
    keep = torch.empty(d.numel(), dtype=torch.uint8)
    native.lib().gta_dare_mask(start, d.numel(), key, t, keep.data_ptr())
    k = d * keep.float()
    out = []
    for a in (d.numpy(), k.numpy()):
        total = 0.0
        for lane in range(8):
            part = a[lane::8].astype(np.float64)
            total += float(np.cumsum(part)[-1]) if part.size else 0.0  # cumsum: in order
        out.append(total)
    return out[0], out[1]


@needs_native
@pytest.mark.parametrize("start", [0, 2**32 - 300, 2**32 - 1000])
def test_dare_sums_of_several_inputs_are_the_defined_sums(start: int) -> None:
    """gta_dare_sums_n over a base and three inputs (bfloat16 and float32 mixed, a length
    not a multiple of 8, flat indices across 2^32) gives each input's sums bit for bit."""
    import ctypes

    xs = _inputs(5003, 3, torch.bfloat16, 40, seed=9)
    xs[2] = xs[2].float()
    xs[3][17] = float("inf")
    keys, ts = [11, 2**40 + 5, 2**63 + 7], [ta.dare_threshold(d) for d in (0.3, 0.5, 0.9)]
    code = {torch.float32: native.DT_F32, torch.bfloat16: native.DT_BF16}
    sums = np.zeros(6, np.float64)
    bits, bit_ptrs = _bit_buffers(3, start, 5003)
    native.lib().gta_dare_sums_n(
        xs[0].data_ptr(),
        code[xs[0].dtype],
        (ctypes.c_void_p * 3)(*[x.data_ptr() for x in xs[1:]]),
        (ctypes.c_int32 * 3)(*[code[x.dtype] for x in xs[1:]]),
        (ctypes.c_uint64 * 3)(*keys),
        (ctypes.c_uint64 * 3)(*ts),
        3,
        5003,
        start,
        sums.ctypes.data,
        bit_ptrs,
    )
    for i in range(3):
        want = _dare_sums_reference(xs[0], xs[i + 1], start, keys[i], ts[i])
        assert (sums[2 * i], sums[2 * i + 1]) == want
        assert (_unpacked(bits[i], start, 5003) == _keep_bytes(start, 5003, keys[i], ts[i])).all()


def _bit_buffers(k: int, start: int, n: int) -> tuple[list[np.ndarray], Any]:
    """k bit buffers for flat elements start .. start + n (filled with 0xA5, so that a bit
    left unwritten shows) and their pointers shifted so that bit g is element g's."""
    import ctypes

    bits = [np.full((start % 8 + n + 7) // 8, 0xA5, np.uint8) for _ in range(k)]
    return bits, (ctypes.c_void_p * k)(*[b.ctypes.data - (start >> 3) for b in bits])


def _unpacked(bits: np.ndarray, start: int, n: int) -> np.ndarray:
    return np.unpackbits(bits, bitorder="little")[start % 8 : start % 8 + n]


def _keep_bytes(start: int, n: int, key: int, t: int) -> np.ndarray:
    keep = np.empty(n, np.uint8)
    native.lib().gta_dare_mask(start, n, key, t, keep.ctypes.data)
    return keep


@needs_native
@pytest.mark.parametrize("start", [0, 2**32 - 300, 2**32 - 1000])
def test_dare_keep_bits_from_pieces_are_the_drawn_mask(start: int) -> None:
    """The keep bits written piece by piece (pieces that start and end off a byte) are the
    mask gta_dare_mask draws; a call without bits writes none."""
    import ctypes

    xs = _inputs(3001, 2, torch.bfloat16, 40, seed=4)
    keys, ts = [7, 2**40 + 9], [ta.dare_threshold(d) for d in (0.4, 0.7)]
    bits, bit_ptrs = _bit_buffers(2, start, 3001)
    for lo, hi, ptrs in ((0, 1001, None), (0, 1001, bit_ptrs), (1001, 1003, bit_ptrs),
                         (1003, 3001, bit_ptrs)):  # fmt: skip
        native.lib().gta_dare_sums_n(
            xs[0][lo:].data_ptr(),
            native.DT_BF16,
            (ctypes.c_void_p * 2)(*[x[lo:].data_ptr() for x in xs[1:]]),
            (ctypes.c_int32 * 2)(native.DT_BF16, native.DT_BF16),
            (ctypes.c_uint64 * 2)(*keys),
            (ctypes.c_uint64 * 2)(*ts),
            2,
            hi - lo,
            start + lo,
            np.zeros(4, np.float64).ctypes.data,
            ptrs,
        )
        if ptrs is None:
            assert all((b == 0xA5).all() for b in bits)
    for i in range(2):
        assert (_unpacked(bits[i], start, 3001) == _keep_bytes(start, 3001, keys[i], ts[i])).all()


@needs_native
def test_dare_keep_bits_are_capped_and_give_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past BITS_BUDGET an input's statistics keep no bits and the chunk kernel draws the mask
    again: the same bytes whether every, some or no input keeps its bits, and the budget is
    whole again once the statistics are freed."""
    import gc

    xs = _inputs(70001, 3, torch.bfloat16, 40, seed=5)
    per = [{"weight": 1.0, "density": d} for d in (0.3, 0.5, 0.8)]
    nbytes = (70001 + 7) // 8
    outs, kept = [], []
    for budget in (1 << 30, 2 * nbytes, 0):
        monkeypatch.setattr(draws, "BITS_BUDGET", budget)
        *_, st = _stats("dare_ties", xs, {}, per)
        kept.append(sum(s.bits is not None for s in st.values()))
        outs.append(_merge("dare_ties", xs, {}, per, 97, stats=st))
        del st
        gc.collect()
        assert draws.bits_held() == 0
    assert kept == [3, 2, 0]
    for o in outs[1:]:
        assert torch.equal(o.view(torch.int16), outs[0].view(torch.int16))


def _dt(x: torch.Tensor) -> int:
    return native.DT_BF16 if x.dtype == torch.bfloat16 else native.DT_F32


def _combine_both_paths(
    xs: list[torch.Tensor], ins: list[dict[str, Any]], elect: bool, normalize: int,
    lambdas: list[float | None], out_dtype: torch.dtype, start: int,
) -> list[tuple[list[bytes], int]]:  # fmt: skip
    """gta_combine's outputs and nonfinite bits with block8 switched on and off."""
    import ctypes

    lib = native.lib()
    switch = ctypes.c_int.in_dll(lib, "gta_block8")
    n, k = xs[0].numel(), len(ins)
    arr = (native.GtaInput * k)()
    for q, x, spec in zip(arr, xs[1:], ins, strict=True):
        q.x, q.dtype = x.data_ptr(), _dt(x)
        for field, value in spec.items():
            setattr(q, field, value)
    odt = native.DT_BF16 if out_dtype == torch.bfloat16 else native.DT_F32
    res = []
    for on in (1, 0):
        outs = [torch.full((n,), 7.0, dtype=out_dtype) for _ in lambdas]
        bad = ctypes.c_uint64()
        switch.value = on
        try:
            rc = lib.gta_combine(
                xs[0].data_ptr(), _dt(xs[0]), arr, k, int(elect), int(normalize > 0),
                int(normalize == 2), 0.25, 1.5, len(lambdas),
                (ctypes.c_int32 * len(lambdas))(*[v is not None for v in lambdas]),
                (ctypes.c_float * len(lambdas))(*[v or 0.0 for v in lambdas]),
                start, n, (ctypes.c_void_p * len(lambdas))(*[o.data_ptr() for o in outs]),
                odt, ctypes.byref(bad),
            )  # fmt: skip
        finally:
            switch.value = 1
        assert rc == 0
        res.append(([o.view(torch.uint8).numpy().tobytes() for o in outs], bad.value))
    return res


@needs_native
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(["plain", "top", "dare", "mixed", "all-none"]),
    k=st.integers(1, 5),
    n=st.sampled_from([8, 512, 1000, 1537, 4096]),
    start=st.sampled_from([0, 8, 3, 4096, 2**32 - 512]),
    elect=st.booleans(),
    normalize=st.sampled_from([0, 1, 2]),
    lambdas=st.sampled_from([[None], [0.5], [1.0, None, -0.3]]),
    out_dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    special=st.booleans(),
    seed=st.integers(0, 2**20),
    dtype=st.sampled_from([torch.bfloat16, torch.float32, "mixed"]),
    cut=st.sampled_from(["third", "start", "end", "block-edge", "per-input"]),
    keep_v=st.sampled_from([0.5, 0.0, 0.75, float("inf")]),
)
def test_block8_gives_the_bytes_of_the_block_loops(
    kind, k, n, start, elect, normalize, lambdas, out_dtype, special, seed, dtype, cut, keep_v
) -> None:
    """gta_combine's AVX2 block8 path (up to 4 inputs of one kind and the base's dtype, 8
    elements in registers) writes the bytes and reports the nonfinite inputs of its block loops:
    bfloat16 and float32, magnitude thresholds with ties at the value on both sides of the cut,
    DARE keep bits, signed zeros, NaN and inf, weights absent and present, normalize with and
    without the floor, several lambdas, and the cases it hands back to the loops (5 inputs,
    mixed kinds or dtypes, ends off 8). The cut of the kept ties inside a block, at its edges,
    before or after every block, and per input elsewhere (block8 takes one compare per element
    in the blocks that no cut falls in); thresholds 0 and inf too."""
    g = torch.Generator().manual_seed(seed)
    xs = [
        (torch.randint(-3, 4, (n,), generator=g) * 0.25).to(
            dtype if dtype != "mixed" else (torch.bfloat16, torch.float32)[i % 2]
        )
        for i in range(k + 1)
    ]
    if special:
        for x, v in zip(xs, (float("nan"), float("inf"), -0.0, float("-inf"), -0.0), strict=False):
            x[int(torch.randint(0, n, (1,), generator=g))] = v
    # bit g of input i is bit g % 8 of byte g >> 3 from a pointer shifted by start >> 3
    bits = [np.random.default_rng(seed + i).integers(0, 256, n // 8 + 2, np.uint8)
            for i in range(k)]  # fmt: skip
    ins = []
    for i in range(k):
        spec: dict[str, Any] = {"weight": 0.5 + i, "has_weight": i % 2, "scale": 1.25,
                                "has_scale": int(i > 0)}  # fmt: skip
        c = kind if kind != "mixed" else ("top", "dare", "plain")[i % 3]
        if c == "top":
            at = {"third": n // 3, "start": 0, "end": n, "block-edge": min(n, 512),
                  "per-input": (n * (i + 1)) // (k + 1)}[cut]  # fmt: skip
            spec |= {"mode": native.M_TOP, "keep_kind": native.K_THRESH, "keep_v": keep_v,
                     "keep_cut": start + at}  # fmt: skip
        elif c == "dare":
            spec |= {"mode": native.M_DARE, "bits": bits[i].ctypes.data - (start >> 3)}
        elif c == "all-none":
            spec |= {"mode": native.M_TOP, "keep_kind": (native.K_ALL, native.K_NONE)[i % 2]}
        ins.append(spec)
    on, off = _combine_both_paths(xs, ins, elect, normalize, lambdas, out_dtype, start)
    assert on == off
