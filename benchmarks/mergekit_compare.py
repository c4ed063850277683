"""Benchmark: the same mergekit configs through mergekit 0.1.5 (in its own virtual environment,
benchmarks/.venv-mergekit) and through `mergekit_sg.merge`, every output tensor compared
(allclose, rtol 1e-5). Inputs: a ~27M-parameter Llama (6 layers, hidden 512, vocab 8000) as a
base and three fine-tunes (seeded noise), float32, saved sharded (40MB shards).

DARE draws its random mask differently in the two tools, so `dare_*` are compared at density
1 (where they must equal task arithmetic); at density < 1 only the kept fraction and the L1
norm of the task vector (rescale) are compared.

    .venv/bin/python benchmarks/mergekit_compare.py            # prints a markdown table
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
MERGEKIT = HERE / ".venv-mergekit" / "bin" / "mergekit-yaml"
RTOL, ATOL = 1e-5, 1e-6


def build_models(root: Path) -> list[Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                      num_attention_heads=8, num_key_value_heads=4, vocab_size=8000,
                      max_position_embeddings=512, tie_word_embeddings=False)  # fmt: skip
    paths = [root / f"m{i}" for i in range(4)]
    if all((p / "config.json").exists() for p in paths):
        return paths
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    for i, p in enumerate(paths):
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(init[k])
                if i and v.is_floating_point():
                    v.add_(torch.randn(v.shape, generator=g) * 2e-3)
        model.save_pretrained(p, max_shard_size="40MB")
    return paths


def configs(m: list[Path]) -> dict[str, dict]:
    b, a, c, d = (str(x) for x in m)
    tv = lambda w, dens=None: {"weight": w, **({"density": dens} if dens else {})}  # noqa: E731
    gta = lambda meth, dens, extra=None: {  # noqa: E731
        "merge_method": meth, "base_model": b, "dtype": "float32",
        "models": [{"model": b}, {"model": a, "parameters": tv(1.0, dens)},
                   {"model": c, "parameters": tv(0.6, dens)}],
        "parameters": extra or {},
    }  # fmt: skip
    return {
        "linear": {
            "merge_method": "linear",
            "dtype": "float32",
            "models": [
                {"model": a, "parameters": {"weight": 0.5}},
                {"model": c, "parameters": {"weight": 0.3}},
                {"model": d, "parameters": {"weight": 0.2}},
            ],
        },
        "task_arithmetic": gta("task_arithmetic", None, {"lambda": 0.8}),
        "ties": gta("ties", 0.5, {"lambda": 0.9}),
        "ties (normalize false, gradient density)": {
            **gta("ties", None, {"normalize": False}),
            "models": [
                {"model": b},
                {"model": a, "parameters": {"weight": 1.0, "density": [0.2, 0.8]}},
                {"model": c, "parameters": {"weight": [0.3, 0.7], "density": 0.5}},
            ],
        },
        "breadcrumbs": gta("breadcrumbs", 0.6),
        "breadcrumbs_ties": gta("breadcrumbs_ties", 0.6),
        "dare_linear (density 1)": gta("dare_linear", 1.0),
        "dare_ties (density 1)": gta("dare_ties", 1.0),
        "slerp (filters + layer gradients)": {
            "merge_method": "slerp",
            "base_model": b,
            "dtype": "float32",
            "models": [{"model": b}, {"model": a}],
            "parameters": {
                "t": [
                    {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                    {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                    {"value": 0.5},
                ]
            },
        },
        "model_stock": {
            "merge_method": "model_stock",
            "base_model": b,
            "dtype": "float32",
            "models": [{"model": a}, {"model": c}, {"model": d}],
        },
    }


def load_inputs(models: list[Path], cfg: dict) -> list[dict[str, torch.Tensor]]:
    """The base and the fine-tunes of a config, in that order."""
    refs = [cfg["base_model"]] + [
        m["model"] for m in cfg["models"] if m["model"] != cfg["base_model"]
    ]
    return [load_dir(Path(r)) for r in refs]


def load_dir(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _tied_positions(name: str, inputs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Positions where some fine-tune's |task vector| value occurs more than once in the
    tensor: where a top-k cut may be broken differently (argsort order vs index order)."""
    base = inputs[0][name].double().reshape(-1)
    out = torch.zeros(base.numel(), dtype=torch.bool)
    for sd in inputs[1:]:
        a = (sd[name].double().reshape(-1) - base).float().abs()
        vals, counts = torch.unique(a, return_counts=True)
        out |= torch.isin(a, vals[counts > 1])
    return out


def compare(
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    inputs: list[dict[str, torch.Tensor]] | None = None,
) -> tuple[str, str]:
    """('yes' | 'ties only' | 'NO', detail): 'ties only' when every differing element sits
    where a magnitude value is tied (see _tied_positions)."""
    if set(a) != set(b):
        return "NO", f"key sets differ: {sorted(set(a) ^ set(b))[:3]}"
    worst, bad, n_bad, untied = 0.0, [], 0, 0
    for k in a:
        x, y = a[k].double(), b[k].double()
        err = float(((x - y).abs() / (y.abs() + ATOL / RTOL)).max()) if x.numel() else 0.0
        worst = max(worst, err)
        close = torch.isclose(x, y, rtol=RTOL, atol=ATOL).reshape(-1)
        if not bool(close.all()):
            bad.append(k)
            n_bad += int((~close).sum())
            if inputs is not None:
                untied += int((~close & ~_tied_positions(k, inputs)).sum())
            else:
                untied += int((~close).sum())
    detail = f"{len(a)} tensors, max rel err {worst:.1e}"
    if not bad:
        return "yes", detail
    detail += f"; {n_bad} element(s) in {len(bad)} tensor(s) differ"
    if untied == 0:
        return "yes, up to magnitude ties", detail + ", all at tied magnitudes"
    return "NO", detail + f", {untied} not at a tie: {bad[:2]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "mergekit-compare")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", help="comma list of config names (their first word) to run")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from mergekit_sg.merge.merge import merge

    args.work.mkdir(parents=True, exist_ok=True)
    models = build_models(args.work / "models")
    rows = [
        "| config | matches mergekit 0.1.5 | detail | mergekit s | ours s |",
        "|---|---|---|---:|---:|",
    ]
    only = set(args.only.split(",")) if args.only else None
    for name, cfg in configs(models).items():
        if only is not None and name.split()[0] not in only:
            continue
        slug = name.split()[0] + str(abs(hash(name)) % 1000)
        yml = args.work / f"{slug}.yml"
        yml.write_text(yaml.safe_dump(cfg, sort_keys=False))
        mk, ours = args.work / f"mk-{slug}", args.work / f"sg-{slug}"
        shutil.rmtree(mk, ignore_errors=True)
        t = time.perf_counter()
        r = subprocess.run([str(MERGEKIT), str(yml), str(mk), "--no-copy-tokenizer", "--quiet",
                            "--allow-crimes"], capture_output=True, text=True)  # fmt: skip
        t_mk = time.perf_counter() - t
        if r.returncode != 0:
            rows.append(
                f"| {name} | mergekit failed | {r.stderr.strip().splitlines()[-1][:120]} | | |"
            )
            continue
        t = time.perf_counter()
        merge(yml, ours, force=True, model_card=False)
        t_sg = time.perf_counter() - t
        tv = load_inputs(models, cfg) if "ties" in name or "breadcrumbs" in name else None
        ok, detail = compare(load_dir(ours), load_dir(mk), tv)
        rows.append(f"| {name} | {ok} | {detail} | {t_mk:.1f} | {t_sg:.1f} |")
        print(rows[-1], flush=True)
        for p in (mk, ours):
            shutil.rmtree(p, ignore_errors=True)
    print("\n".join(rows))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
