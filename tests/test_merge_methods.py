"""Every merge method through `merge` (the streaming executor, small chunks) against a float64
reference of its formula; endpoint identities; DARE reruns; bad configs refused before any
write; the Fisher path's bytes pinned from before the executors were unified."""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mergekit_sg.errors import SgMergeError
from mergekit_sg.merge import executor
from mergekit_sg.merge import output as output_mod
from mergekit_sg.merge.interpolate import interpolate
from mergekit_sg.merge.merge import merge

SHAPES = {"model.layers.0.w": (33, 17), "model.layers.1.w": (33, 17), "b": (50,), "emb": (7, 5)}


def _models(root: Path, n: int, seed: int = 0) -> list[Path]:
    g = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    paths = []
    for i in range(n):
        sd = (
            base
            if i == 0
            else {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        )
        p = root / f"m{i}.safetensors"
        save_file(sd, p)
        paths.append(p)
    return paths


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_mod, "execute", functools.partial(executor.execute, chunk_elems=97))


def _load(p: Path) -> dict[str, torch.Tensor]:
    return load_file(p / "model.safetensors")


def _ref_gta(xs, weights, densities, elect, normalize, lam, gamma=None):
    base = xs[0].double().reshape(-1)
    ds = []
    for x, d in zip(xs[1:], densities, strict=True):
        tau = x.double().reshape(-1) - base
        if d < 1:
            n = tau.numel()
            order = torch.sort(-tau.abs(), stable=True).indices
            keep = torch.zeros(n, dtype=torch.bool)
            if gamma is None:
                keep[order[: max(1, int(d * n))]] = True
            else:
                target, top = int(d * n), int(gamma * n)
                bot = max(0, n - target - top)
                keep[order[n - bot - target : n - bot]] = True
            tau = tau * keep
        ds.append(tau)
    wd = [w * t for w, t in zip(weights, ds, strict=True)]
    if elect:
        total = sum(wd)
        maj = torch.where(total >= 0, 1.0, -1.0).double()
        votes = [torch.sign(t) == maj for t in wd]
        mixed = sum(t * v for t, v in zip(wd, votes, strict=True))
        div = sum(w * v.double() for w, v in zip(weights, votes, strict=True))
        div[div == 0] = 1
    else:
        mixed = sum(wd)
        div = sum(weights) if abs(sum(weights)) >= 1e-8 else 1.0
    if normalize:
        mixed = mixed / div
    return (base + lam * mixed).reshape(xs[0].shape)


def _cfg(method, paths, weights, base=True, **params):
    models = [{"model": str(p), "parameters": w} for p, w in zip(paths, weights, strict=True)]
    cfg = {"merge_method": method, "models": models, "parameters": params, "dtype": "float32"}
    if base:
        cfg["base_model"] = str(paths[0])
    return cfg


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    w=st.lists(st.floats(-1.5, 1.5).filter(lambda v: abs(v) > 0.05), min_size=2, max_size=2),
    d=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=2),
    method=st.sampled_from(["task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties"]),
    lam=st.floats(0.2, 1.5),
)
def test_task_vector_methods_match_float64(tmp_path_factory, w, d, method, lam) -> None:
    root = tmp_path_factory.mktemp("gta")
    paths = _models(root, 3)
    per = [{}] + [{"weight": wi, "density": di} for wi, di in zip(w, d, strict=True)]
    if method == "task_arithmetic":
        per = [{}] + [{"weight": wi} for wi in w]
    res = merge(_cfg(method, paths, per, **{"lambda": lam}), root / "o", model_card=False)
    got = _load(res.out)
    xs = [load_file(p) for p in paths]
    elect = method in ("ties", "breadcrumbs_ties")
    normalize = method == "ties"
    gamma = 0.01 if method.startswith("breadcrumbs") else None
    dens = d if method != "task_arithmetic" else [1.0, 1.0]
    for k in SHAPES:
        want = _ref_gta([x[k] for x in xs], w, dens, elect, normalize, lam, gamma)
        torch.testing.assert_close(got[k].double(), want, rtol=1e-5, atol=1e-5)


def test_linear_slerp_model_stock_match_float64(tmp_path: Path) -> None:
    paths = _models(tmp_path, 3)
    xs = [load_file(p) for p in paths]
    res = merge(
        _cfg("linear", paths, [{"weight": 0.2}, {"weight": 0.5}, {"weight": 1.0}], base=False),
        tmp_path / "lin",
        model_card=False,
    )
    for k, t in _load(res.out).items():
        want = (0.2 * xs[0][k].double() + 0.5 * xs[1][k].double() + xs[2][k].double()) / 1.7
        torch.testing.assert_close(t.double(), want, rtol=1e-5, atol=1e-6)
    res = merge(_cfg("slerp", paths[:2], [{}, {}], t=0.3), tmp_path / "sl", model_card=False)
    for k, t in _load(res.out).items():
        a, b = xs[0][k].double().reshape(-1), xs[1][k].double().reshape(-1)
        cos = float(a.dot(b) / (a.norm() * b.norm()))
        th = math.acos(cos)
        want = (math.sin(0.7 * th) * a + math.sin(0.3 * th) * b) / math.sin(th)
        torch.testing.assert_close(t.double().reshape(-1), want, rtol=1e-5, atol=1e-6)
    res = merge(_cfg("model_stock", paths, [{}, {}, {}]), tmp_path / "ms", model_card=False)
    for k, t in _load(res.out).items():
        w0, w1, w2 = (x[k].double().reshape(-1) for x in xs)
        o1, o2 = w1 - w0, w2 - w0
        c = float(o1.dot(o2) / (o1.norm() * o2.norm()))
        tt = 2 * c / (1 + c)
        want = tt * (w1 + w2) / 2 + (1 - tt) * w0
        torch.testing.assert_close(t.double().reshape(-1), want, rtol=1e-5, atol=1e-6)


def test_endpoints_are_exact(tmp_path: Path) -> None:
    paths = _models(tmp_path, 3)
    xs = [load_file(p) for p in paths]
    one = merge(_cfg("linear", paths[1:2], [{"weight": 0.7}], base=False), tmp_path / "l1",
                model_card=False)  # fmt: skip
    assert all(torch.equal(t, xs[1][k]) for k, t in _load(one.out).items())
    per = [{}, {"weight": 1.0}, {"weight": 0.5}]
    zero = merge(_cfg("task_arithmetic", paths, per, **{"lambda": 0.0}), tmp_path / "ta0",
                 model_card=False)  # fmt: skip
    assert all(torch.equal(t, xs[0][k]) for k, t in _load(zero.out).items())
    ta = merge(_cfg("task_arithmetic", paths, per), tmp_path / "ta", model_card=False)
    per_d = [{}, {"weight": 1.0, "density": 1.0}, {"weight": 0.5, "density": 1.0}]
    dare = merge(_cfg("dare_linear", paths, per_d), tmp_path / "d1", model_card=False)
    assert (ta.out / "model.safetensors").read_bytes().split(b"sgmerge")[0]
    a, b = _load(ta.out), _load(dare.out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dare_is_seeded_and_chunking_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _models(tmp_path, 3)
    per = [{}, {"weight": 1.0, "density": 0.4}, {"weight": 0.6, "density": 0.7}]
    cfg = _cfg("dare_ties", paths, per)
    a = _load(merge(cfg, tmp_path / "a", model_card=False).out)
    monkeypatch.setattr(
        output_mod, "execute", functools.partial(executor.execute, chunk_elems=1000)
    )
    b = _load(merge(cfg, tmp_path / "b", model_card=False).out)
    c = _load(merge({**cfg, "seed": 1}, tmp_path / "c", model_card=False).out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    base = load_file(paths[0])
    kept = (a["model.layers.0.w"] != base["model.layers.0.w"]).float().mean()
    assert 0.4 < kept < 0.95  # some entries dropped in both, most kept by one


@pytest.mark.parametrize("method", ["ties", "dare_ties", "slerp"])
def test_statistics_thread_gives_the_same_bytes(tmp_path: Path, monkeypatch, method) -> None:
    """The statistics computed in their own thread, one tensor ahead of the merge
    (STATS_AHEAD = 1), or inline before each tensor's first chunk (0): the same bytes, for a
    grid too (several statistics keys per tensor)."""
    paths = _models(tmp_path, 3)
    per = [{}, {"weight": 1.0, "density": 0.5}, {"weight": 0.5, "density": 0.7}]
    cfg = _cfg(method, paths, per)
    grid = {"lambda": [0.5, 1.0]}
    if method == "slerp":
        cfg = _cfg("slerp", paths[:2], [{}, {}], t=0.3)
        grid = {"t": [0.3, 0.6]}
    outs = []
    for ahead in (0, 1):
        monkeypatch.setattr(executor, "STATS_AHEAD", ahead)
        res = merge(cfg, tmp_path / f"a{ahead}", grid=grid, model_card=False)
        outs.append({k: (p / "model.safetensors").read_bytes() for k, p in res.outputs.items()})
    assert outs[0] == outs[1] and len(outs[0]) == 2


def test_statistics_thread_error_stops_the_merge(tmp_path: Path, monkeypatch) -> None:
    """An error in the statistics thread ends the merge with that error, nothing written."""
    from mergekit_sg.merge.methods.task_arithmetic import Ties

    def boom(*a, **k):
        raise SgMergeError("statistics failed")

    monkeypatch.setattr(Ties, "stats", boom)
    paths = _models(tmp_path, 3)
    per = [{}, {"weight": 1.0, "density": 0.5}, {"weight": 0.5, "density": 0.5}]
    dest = tmp_path / "o"
    with pytest.raises(SgMergeError, match="statistics failed"):
        merge(_cfg("ties", paths, per), dest, model_card=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]


def test_grid_equals_single_runs(tmp_path: Path) -> None:
    paths = _models(tmp_path, 3)
    per = [{}, {"weight": 1.0, "density": 0.5}, {"weight": 0.5, "density": 0.5}]
    res = merge(_cfg("ties", paths, per), tmp_path / "g", grid={"lambda": [0.5, 1.0]},
                model_card=False)  # fmt: skip
    assert set(res.outputs) == {"lambda-0.5", "lambda-1"}
    for lam, label in ((0.5, "lambda-0.5"), (1.0, "lambda-1")):
        single = merge(_cfg("ties", paths, per, **{"lambda": lam}), tmp_path / f"s{lam}",
                       model_card=False)  # fmt: skip
        got, want = _load(res.outputs[label]), _load(single.out)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_gradient_and_filter_settings(tmp_path: Path) -> None:
    paths = _models(tmp_path, 2)
    xs = [load_file(p) for p in paths]
    t = [{"filter": "emb", "value": 0.9}, {"value": [0.0, 1.0]}]
    res = merge(_cfg("slerp", paths, [{}, {}], t=t), tmp_path / "o", model_card=False)
    got = _load(res.out)
    assert torch.equal(got["model.layers.0.w"], xs[0]["model.layers.0.w"])  # t = 0
    assert torch.equal(got["model.layers.1.w"], xs[1]["model.layers.1.w"])  # t = 1
    assert torch.equal(got["b"], xs[0]["b"])  # outside the layers: t = 0 -> 0


@pytest.mark.parametrize(
    ("cfg", "msg"),
    [
        ({"merge_method": "nope", "models": ["A"]}, "merge_method: unknown method 'nope'"),
        ({"merge_method": "linear", "slices": []}, "slices:"),
        ({"merge_method": "linear", "tokenizer_source": "union"}, "tokenizer_source:"),
        ({"merge_method": "linear", "experts": []}, "mergekit-moe"),
        (
            {
                "merge_method": "slerp",
                "base_model": "M0",
                "models": ["M0", "M1", "M2"],
                "parameters": {"t": 0.5},
            },
            "slerp takes exactly 2 models",
        ),
        (
            {"merge_method": "ties", "models": [{"model": "M1", "parameters": {"weight": 1}}]},
            "base_model: ties needs a base model",
        ),
        (
            {
                "merge_method": "ties",
                "base_model": "M0",
                "models": [{"model": "M1", "parameters": {"weight": 1, "density": 0}}],
            },
            "density",
        ),
        (
            {
                "merge_method": "linear",
                "models": [{"model": "M1", "parameters": {"weight": "nan"}}],
            },
            "weight",
        ),
    ],
)
def test_bad_configs_are_one_line_and_write_nothing(tmp_path: Path, cfg: dict, msg: str) -> None:
    paths = _models(tmp_path, 3)
    sub = {f"M{i}": str(p) for i, p in enumerate(paths)}

    def fix(v):
        if isinstance(v, str):
            return sub.get(v, v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    with pytest.raises(SgMergeError, match=msg.replace("(", r"\(")) as e:
        merge(fix(cfg), tmp_path / "o")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()


def test_mergekit_yaml_text_and_shape_check(tmp_path: Path) -> None:
    paths = _models(tmp_path, 2)
    bad = load_file(paths[1])
    bad["b"] = torch.zeros(51)
    save_file(bad, tmp_path / "bad.safetensors")
    yml = (
        f"merge_method: linear\nmodels:\n  - model: {paths[0]}\n    parameters: {{weight: 1}}\n"
        f"  - model: {tmp_path / 'bad.safetensors'}\n    parameters: {{weight: 1}}\n"
    )
    with pytest.raises(SgMergeError, match="shape mismatch"):
        merge(yml, tmp_path / "o")
    assert not (tmp_path / "o").exists()


PINNED_FISHER = {  # computed with execute_fisher (the whole-tensor loop) before it went away
    0.0: "2024f9620d99958faf8fa331f4ed3b9a1c868300097eac6a514d54bdc3af9207",
    0.3: "27cd3588a54d4e02bbfc743b6f1f1c2b945d71baa5245a2bebd3eb195b0f7373",
    0.75: "5af370652cbe18a2320da106ffa017a38e0f9fab960a78473c0244c7491d6780",
    1.0: "cc93b855c1b9d495c7d08aa0e9c3a99ad69d1cfbfd8c8620ea501eb3391c17b4",
}


def _fisher_fixture(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1234)
    shapes = {"a.weight": (37, 29), "b.bias": (29,), "c.weight": (300, 70), "buf": (5,)}
    pre = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    ft = {n: t + 0.1 * torch.randn(t.shape, generator=g) for n, t in pre.items()}
    pre["c.weight"], ft["c.weight"] = pre["c.weight"].bfloat16(), ft["c.weight"].bfloat16()
    pre["ids"], ft["ids"] = torch.arange(7), torch.arange(7)
    f0 = {n: torch.rand(s, generator=g) for n, s in shapes.items() if n != "buf"}
    f1 = {n: torch.rand(s, generator=g) for n, s in shapes.items() if n != "buf"}
    f0["a.weight"][:3] = 0.0
    for name, sd in (("pre", pre), ("ft", ft), ("f0", f0), ("f1", f1)):
        save_file(sd, tmp_path / f"{name}.safetensors")


def test_fisher_interpolate_bytes_unchanged(tmp_path: Path) -> None:
    _fisher_fixture(tmp_path)
    with pytest.warns(UserWarning, match="no Fisher entry"):
        res = interpolate(
            tmp_path / "pre.safetensors", tmp_path / "ft.safetensors", tmp_path / "out",
            alpha=[0.0, 0.3, 0.75, 1.0], fisher=f"{tmp_path / 'f0.safetensors'},"
            f"{tmp_path / 'f1.safetensors'}", fisher_floor=1e-3, model_card=False,
        )  # fmt: skip
    for a, d in res.outputs.items():
        sd = _load(d)
        h = hashlib.sha256()
        for n in sorted(sd):
            h.update(n.encode())
            h.update(sd[n].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        assert h.hexdigest() == PINNED_FISHER[a], a


def test_fisher_method_in_a_config_equals_fisher_interpolate(tmp_path: Path) -> None:
    _fisher_fixture(tmp_path)
    cfg = {
        "merge_method": "fisher",
        "models": [
            {"model": str(tmp_path / "pre.safetensors"),
             "parameters": {"weight": 0.7, "fisher": str(tmp_path / "f0.safetensors")}},
            {"model": str(tmp_path / "ft.safetensors"),
             "parameters": {"weight": 0.3, "fisher": str(tmp_path / "f1.safetensors")}},
        ],
        "parameters": {"fisher_floor": 1e-3},
    }  # fmt: skip
    with pytest.warns(UserWarning, match="no Fisher entry"):
        got = _load(merge(cfg, tmp_path / "m", model_card=False).out)
        want = _load(interpolate(tmp_path / "pre.safetensors", tmp_path / "ft.safetensors",
                                 tmp_path / "i", alpha=0.3, fisher=f"{tmp_path / 'f0.safetensors'},"
                                 f"{tmp_path / 'f1.safetensors'}", fisher_floor=1e-3,
                                 model_card=False).out)  # fmt: skip
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_dare_matches_its_formula_with_the_seeded_mask(tmp_path: Path) -> None:
    """dare_linear = base + sum_i w_i * keep_i * tau_i * |tau_i|_1 / |keep_i * tau_i|_1, with
    keep_i the (seed, tensor, input)-seeded Bernoulli(density) mask."""
    from mergekit_sg.merge.methods.base import ChunkCtx
    from mergekit_sg.merge.methods.task_arithmetic import dare_keep

    paths = _models(tmp_path, 3)
    xs = [load_file(p) for p in paths]
    per = [{}, {"weight": 1.0, "density": 0.3}, {"weight": -0.4, "density": 0.8}]
    got = _load(merge({**_cfg("dare_linear", paths, per), "seed": 5}, tmp_path / "o",
                      model_card=False).out)  # fmt: skip
    for k in SHAPES:
        base = xs[0][k].double().reshape(-1)
        want = base.clone()
        for i, (w, d) in enumerate(((1.0, 0.3), (-0.4, 0.8)), start=1):
            tau = xs[i][k].double().reshape(-1) - base
            keep = dare_keep(ChunkCtx(k, tau.numel(), 0, 5), i, 0, tau.numel(), d)
            kept = tau * keep
            want += w * kept * (tau.abs().sum() / kept.abs().sum())
        torch.testing.assert_close(got[k].double().reshape(-1), want, rtol=1e-5, atol=1e-6)


def test_parse_grid() -> None:
    from mergekit_sg.merge.merge import parse_grid

    assert parse_grid(["lambda=0.3,0.5"]) == {"lambda": [0.3, 0.5]}
    assert parse_grid(["lambda=0:1:0.25", "density=0.5"]) == {
        "lambda": [0.0, 0.25, 0.5, 0.75, 1.0],
        "density": [0.5],
    }
    for bad in (["lambda"], ["lambda=1:0:0.1"], ["=1"], ["t=nan"], ["t=1", "t=2"]):
        with pytest.raises(SgMergeError, match="--param"):
            parse_grid(bad)
