"""Is the fine-tune's generality loss real? Paired, per-question re-scoring of a finished
`llm_forgetting.py` run on larger question sets.

`llm_forgetting.py` reports each model's generality with the 95% interval of *one* model's
accuracy. Every model answers the same questions, so the right test of "model B is below model
A" is paired: per question, d_i = hit_B(i) - hit_A(i) in {-1, 0, 1}, and the difference of the
accuracies is mean(d) with standard error sd(d) / sqrt(n). Questions both models get right (or
both wrong) add no noise, so a paired interval is several times narrower than two unpaired
ones. This script takes a finished run's models (the pretrained HF folder, the unmitigated
fine-tune `none/`, the mitigated fine-tunes), builds the WiSE-FT merges in memory
(theta(alpha) = (1 - alpha) theta_0 + alpha theta_1, loaded into one live model), scores them
all on larger sets of the same two generality tasks and more held-out speech chunks, keeps
every per-question result, and reports each model against the pretrained model and against
the fine-tune with paired 95% intervals and exact McNemar tests:

- generality difference: Delta = (mean(d_sentiment) + mean(d_analogy)) / 2, its standard error
  sqrt(var(d_s) / n_s + var(d_a) / n_a) / 2 (sample variances), 95% = +-1.96 se;
- McNemar per task: of the n_01 + n_10 questions the two models disagree on, the exact
  two-sided binomial p of seeing min(n_01, n_10) or fewer under p = 1/2;
- choice loss: the cross-entropy of the answer among the choices (softmax over the choices'
  summed log-probabilities), per question, paired the same way: a continuous measure of how
  much probability the model moves away from the right answer;
- speciality: held-out speech token probability exp(-sum NLL / tokens), with a paired bootstrap
  (2000 resamples of the held-out chunks) 95% interval of the difference in mean token NLL.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python \\
        benchmarks/llm_paired.py --run WORK [--n-sentiment 600 --n-analogy 600 --heldout 64]

WORK is a finished `llm_forgetting.py --workdir WORK` (its `pretrained/`, `none/` and
`{l2,kd,lora}-W/` folders and `finetune.json` settings). Results go to WORK/paired/:
one JSON per model (the per-question records, reused when the script runs again), table.md
and results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_forgetting import METHOD_LABELS, SPEC, Settings, analogy_task, domain_data, sentiment_task

from mergekit_sg.evals.registry import build_evaluator
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.models.adapters import LoadedModel, load_model

MITIGATIONS = ("l2-1", "l2-0.1", "kd-10", "kd-1", "lora-2", "lora-16")
Z95 = 1.959963984540054


# ---- statistics (pure) ------------------------------------------------------------------------


def mean_se(d: list[float]) -> tuple[float, float]:
    """Mean of paired differences and its standard error sd(d) / sqrt(n) (sample sd)."""
    n = len(d)
    m = math.fsum(d) / n
    var = math.fsum((x - m) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return m, math.sqrt(var / n)


def mcnemar_p(n01: int, n10: int) -> float:
    """Exact two-sided McNemar p: 2 P(X <= min(n01, n10)), X ~ Binomial(n01 + n10, 1/2),
    capped at 1 (1 when the models never disagree)."""
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_generality(
    a: dict[str, list[int]], b: dict[str, list[int]], tasks: list[str]
) -> tuple[float, float]:
    """Delta generality (B - A) as the mean over tasks of the mean per-question hit difference,
    and its 95% half-width: 1.96 sqrt(sum_t var(d_t) / n_t) / T."""
    total, var = 0.0, 0.0
    for t in tasks:
        m, se = mean_se([float(y - x) for x, y in zip(a[t], b[t], strict=True)])
        total += m
        var += se * se
    return total / len(tasks), Z95 * math.sqrt(var) / len(tasks)


def bootstrap_nll(
    a: list[tuple[float, int]], b: list[tuple[float, int]], reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Difference of mean token NLL (B - A) over held-out chunks (sum NLL, tokens) and its 95%
    paired-bootstrap interval (chunks resampled, the same resample for both models)."""

    def diff(idx: list[int]) -> float:
        toks = sum(a[i][1] for i in idx)
        return (math.fsum(b[i][0] for i in idx) - math.fsum(a[i][0] for i in idx)) / toks

    rng = random.Random(seed)
    n = len(a)
    draws = sorted(diff([rng.randrange(n) for _ in range(n)]) for _ in range(reps))
    return diff(list(range(n))), draws[int(0.025 * reps)], draws[int(0.975 * reps) - 1]


def hits_and_losses(questions: list[Any], per_token: list[torch.Tensor]) -> tuple[list, list]:
    """Per question: 1 if the answer's summed log-probability is the highest of the choices
    (ties to the first, as the evaluator's `accuracy`), and the answer's cross-entropy among
    the choices."""
    k = 0
    hits, losses = [], []
    for q in questions:
        s = torch.tensor(
            [math.fsum(t.tolist()) for t in per_token[k : k + len(q.choices)]], dtype=torch.float64
        )
        k += len(q.choices)
        hits.append(int(int(s.argmax()) == q.answer))
        losses.append(-float(s.log_softmax(0)[q.answer]))
    return hits, losses


# ---- models -----------------------------------------------------------------------------------


def state(path: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ck:
        return {n: ck.read(n).to(torch.float32) for n in ck.tensors}


def set_lerp(
    model: LoadedModel, pre: dict[str, torch.Tensor], ft: dict[str, torch.Tensor], alpha: float
) -> None:
    """Load theta(alpha) = (1 - alpha) pre + alpha ft into the live model, in place."""
    params = dict(model.module.named_parameters())
    params.update(dict(model.module.named_buffers()))
    rename = model.rename or (lambda n: n)
    with torch.no_grad():
        for name, p in params.items():
            key = rename(name)
            if key in pre:
                p.copy_(torch.lerp(pre[key], ft[key], alpha) if alpha else pre[key])


def score_model(model: LoadedModel, evs: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for task in ("sentiment", "analogy"):
        ev = evs[task]
        hits, losses = hits_and_losses(ev.questions, ev.outputs(model))
        rec[task] = {"hits": hits, "loss": losses}
    per = evs["speeches"].outputs(model)
    rec["speeches"] = [(-math.fsum(t.tolist()), len(t)) for t in per]
    return rec


# ---- report -----------------------------------------------------------------------------------


TASKS = ["sentiment", "analogy"]


def point(rec: dict[str, Any]) -> tuple[float, float]:
    """(speciality, generality): held-out token probability exp(-sum NLL / tokens) and the mean
    of the two tasks' accuracies."""
    nll = math.fsum(x for x, _ in rec["speeches"]) / sum(n for _, n in rec["speeches"])
    acc = [sum(rec[t]["hits"]) / len(rec[t]["hits"]) for t in TASKS]
    return math.exp(-nll), sum(acc) / len(acc)


def best_merge_at(recs: dict[str, Any], spec: float) -> str | None:
    """The scored WiSE-FT merge (alpha > 0) with the best generality among those at least as
    special as `spec` (the scan's upper envelope, as tradeoff.wise_generality_at); None when
    every merge is less special."""
    cands = [n for n in recs if n.startswith("alpha=") and n != "alpha=0"]
    cands = [n for n in cands if point(recs[n])[0] >= spec - 1e-12]
    return max(cands, key=lambda n: point(recs[n])[1], default=None)


def versus(ref: dict[str, Any], rec: dict[str, Any]) -> tuple[str, str, str]:
    """Paired generality difference (rec - ref) with its 95% half-width, the per-task exact
    McNemar p, and the per-task paired choice-loss difference with its 95% half-width."""
    hits = {t: rec[t]["hits"] for t in TASKS}
    d, hw = paired_generality({t: ref[t]["hits"] for t in TASKS}, hits, TASKS)
    ps, dl = [], []
    for t in TASKS:
        pairs = list(zip(ref[t]["hits"], hits[t], strict=True))
        ps.append(f"{mcnemar_p(sum(x > y for x, y in pairs), sum(x < y for x, y in pairs)):.2g}")
        m, se = mean_se([y - x for x, y in zip(ref[t]["loss"], rec[t]["loss"], strict=True)])
        dl.append(f"{m:+.3f}+-{Z95 * se:.3f}")
    return f"{d:+.3f} +- {hw:.3f}", " / ".join(ps), " / ".join(dl)


def row(name: str, recs: dict[str, Any]) -> list[str]:
    rec, base, ft = recs[name], recs["alpha=0"], recs["alpha=1"]
    spec, gen = point(rec)
    acc = [sum(rec[t]["hits"]) / len(rec[t]["hits"]) for t in TASKS]
    cells = [LABELS.get(name, name), f"{spec:.4f}", f"{gen:.3f}", *(f"{a:.3f}" for a in acc)]
    cells += list(versus(base, rec)) if rec is not base else ["", "", ""]
    cells += list(versus(ft, rec)[:2]) if rec is not ft else ["", ""]
    merge = best_merge_at(recs, spec)
    if name.startswith("alpha="):
        cells.append("")
    else:
        cells.append(
            f"{versus(recs[merge], rec)[0]} ({merge})" if merge else "beyond every merge scored"
        )
    ds, lo, hi = bootstrap_nll(base["speeches"], rec["speeches"])
    cells.append("" if rec is base else f"{-ds:+.3f} [{-hi:+.3f}, {-lo:+.3f}]")
    return cells


LABELS = {"alpha=0": "pretrained (alpha=0)", "alpha=1": "fine-tune (alpha=1)"}
HEAD = [
    "model",
    "speciality",
    "generality",
    "sentiment",
    "analogy",
    "gen. vs pretrained (paired 95%)",
    "McNemar p vs pre (sent. / anal.)",
    "choice loss vs pre (sent. / anal.)",
    "gen. vs fine-tune (paired 95%)",
    "McNemar p vs FT",
    "gen. vs best merge at >= speciality",
    "log-prob/token vs pre [95%]",
]


def pareto(path: Path, order: list[str], recs: dict[str, Any], title: str) -> None:
    """Speciality vs generality (tradeoff.plot): the merges as WiSE-FT's path, each mitigation
    between the pretrained model and the fine-tune."""
    from tradeoff import PlotText, curves_of, plot

    def as_row(name: str) -> dict[str, Any]:
        spec, gen = point(recs[name])
        if name.startswith("alpha="):
            return {
                "method": "wise-ft",
                "strength": float(name[6:]),
                "speciality": spec,
                "generality": gen,
            }
        method, w = name.split("-", 1)
        return {"method": method, "strength": float(w), "speciality": spec, "generality": gen}

    wise = [as_row(n) for n in order if n.startswith("alpha=")]
    rows = [as_row(n) for n in order if not n.startswith("alpha=")]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    text = PlotText(
        labels=METHOD_LABELS,
        xlabel="speciality: held-out speech token probability exp(-NLL)",
        ylabel="generality: mean accuracy (RT sentiment, word analogies)",
        start="SmolLM2-135M-Instruct (GGUF)",
        end="fine-tuned on speeches, no mitigation",
        alpha_prefix=True,
        notes=["paired per-question comparisons: see the table"],
    )
    plot(path, curves_of(wise, rows, methods), title, text)


def forest(path: Path, order: list[str], recs: dict[str, Any], s: Settings) -> None:
    """Each model's generality difference to the pretrained model and to the fine-tune, with
    its paired 95% interval (a forest plot: an interval clear of 0 is a real difference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = TASKS
    names = list(reversed(order))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.6), sharey=True)
    for ax, ref_name, title in (
        (axes[0], "alpha=0", "vs the pretrained model"),
        (axes[1], "alpha=1", "vs the fine-tune (no mitigation)"),
    ):
        ref = recs[ref_name]
        for y, name in enumerate(names):
            if name == ref_name:
                continue
            d, hw = paired_generality(
                {t: ref[t]["hits"] for t in tasks}, {t: recs[name][t]["hits"] for t in tasks}, tasks
            )
            color = "tab:blue" if name.startswith("alpha=") else "tab:orange"
            ax.errorbar(d, y, xerr=hw, fmt="o", color=color, capsize=3)
        ax.axvline(0, color="grey", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("generality difference (paired 95%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), [LABELS.get(n, n) for n in names])
    fig.suptitle(
        f"SmolLM2-135M-Instruct on speeches: per-question paired differences\n"
        f"({s.n_sentiment} RT reviews + {s.n_analogy} analogies; blue: WiSE-FT merges, orange: "
        "mitigated fine-tunes)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished llm_forgetting workdir")
    ap.add_argument("--n-sentiment", type=int, default=600)
    ap.add_argument("--n-analogy", type=int, default=600)
    ap.add_argument("--heldout", type=int, default=64, help="held-out speech chunks")
    ap.add_argument("--alphas", default="0.2,0.4,0.6,0.8", help="WiSE-FT merges to score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--report-only", action="store_true", help="table and plots of the models already scored"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = args.run
    out = run / "paired"
    out.mkdir(exist_ok=True)
    opts = json.loads((run / "none" / "finetune.json").read_text())["options"]
    s = Settings(
        train_chunks=len((run / "train.jsonl").read_text().splitlines()),
        heldout_chunks=args.heldout,
        n_sentiment=args.n_sentiment,
        n_analogy=args.n_analogy,
        max_length=opts["max_length"],
    )
    _, held, about = domain_data(out, s)
    model = load_model(SPEC, run / "pretrained")
    tok = model.tokenizer
    sentiment_task(tok, out / "sentiment.jsonl", s.n_sentiment, s.review_chars)
    analogy_task(tok, out / "analogy.jsonl", s.n_analogy)
    evs = {
        "speeches": build_evaluator(
            f"speeches=lm-perplexity:{held},field=text,max_length={s.max_length + 16},batch_size=8"
        ),
        "sentiment": build_evaluator(
            f"sentiment=lm-multiple-choice:{out / 'sentiment.jsonl'},prompt={{question}}"
        ),
        "analogy": build_evaluator(
            f"analogy=lm-multiple-choice:{out / 'analogy.jsonl'},prompt={{question}}"
        ),
    }
    tag = f"s{s.n_sentiment}-a{s.n_analogy}-h{s.heldout_chunks}"
    states: dict[str, dict[str, torch.Tensor]] = {}  # the endpoints, read at the first merge
    mids = [float(a) for a in args.alphas.split(",") if a]
    # the endpoints first, then the merges, then the mitigations: a run cut short still
    # answers the first question (does the fine-tune lose generality?)
    names = ["alpha=0", "alpha=1", *(f"alpha={a:g}" for a in mids)]
    names += [m for m in MITIGATIONS if (run / m / "finetune.json").exists()]
    recs: dict[str, Any] = {}
    t0 = time.perf_counter()
    title = (
        f"SmolLM2-135M-Instruct fine-tuned on convention speeches ({s.train_chunks} chunks, "
        f"{opts['epochs']} epoch, lr {opts['lr']:g}):\nmitigations vs WiSE-FT, "
        f"{s.n_sentiment} + {s.n_analogy} questions"
    )
    for name in names:
        cache = out / f"{name}.{tag}.json"
        if cache.exists():
            recs[name] = json.loads(cache.read_text())
        elif args.report_only:
            continue
        else:
            ts = time.perf_counter()
            if name.startswith("alpha="):
                for end in ("pretrained", "none"):
                    states.setdefault(end, state(run / end))
                set_lerp(model, states["pretrained"], states["none"], float(name[6:]))
                live = model
            else:
                live = load_model(SPEC, run / name)
            recs[name] = score_model(live, evs)
            cache.write_text(json.dumps(recs[name]))
            print(f"== {name}: {time.perf_counter() - ts:.0f} s", flush=True)
        if "alpha=1" in recs:
            report(out, tag, recs, about, s, title, time.perf_counter() - t0)


def report(
    out: Path, tag: str, recs: dict[str, Any], about: str, s: Settings, title: str, seconds: float
) -> None:
    """table.TAG.md and results.TAG.json of the models scored so far."""
    alphas = sorted(float(n[6:]) for n in recs if n.startswith("alpha="))
    order = [f"alpha={a:g}" for a in alphas] + [n for n in recs if not n.startswith("alpha=")]
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for name in order:
        lines.append("| " + " | ".join(row(name, recs)) + " |")
    table = "\n".join(lines)
    settings = (
        f"{about}; generality: {s.n_sentiment} RT reviews (<= {s.review_chars} chars, balanced), "
        f"{s.n_analogy} analogies; paired 95% = 1.96 se of per-question differences"
    )
    (out / f"table.{tag}.md").write_text(table + "\n")
    forest(out / f"paired.{tag}.png", order, recs, s)
    pareto(out / f"front.{tag}.png", order, recs, title)
    (out / f"results.{tag}.json").write_text(
        json.dumps({"settings": settings, "models": order, "seconds": seconds})
    )
    print(table)
    print(settings, flush=True)


if __name__ == "__main__":
    main()
