"""MERGETUNE (head or subset mode) on the real all-MiniLM-L6-v2 and real Rotten Tomatoes reviews,
measured with `sgmerge lmc` (the in-memory `path.run.lmc`) on the held-out review loss.

The pair is the demo's: the zero-shot model is MiniLM with the head "a bad movie" / "a good
movie" (scale 20), the fine-tuned model is the whole model trained on Rotten Tomatoes
(`sgmerge finetune`). MERGETUNE then continues the fine-tuned model's head (or, with
--trainable GLOB, those parameters; W = 10, W_lmc = 1, K = 5, identity Fisher unless --fisher),
and the three paths zero-shot -> continued, continued -> fine-tuned and zero-shot -> fine-tuned
are probed with their barriers. The fine-tuned pair is reused when --work already holds it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mergetune_minilm.py --work /tmp/mt-minilm

The harsher pair of benchmarks/RESULTS.md (a direct barrier to lower), subset mode over every
tensor with the exact zero-shot path term; both MERGETUNE barriers end below the direct one:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mergetune_minilm.py --work /tmp/mt-harsh \
        --train-size 512 --epochs 1 --lr 1e-3 --trainable '*' --mt-epochs 1 --mt-lr 1e-4 \
        --zs-term path

(the other rows of that table: --zs-term quadratic, with --optimizer sgd or --fisher FILE.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mergekit_sg.commands import PROMPTS, minilm_dir
from mergekit_sg.path import lmc
from mergekit_sg.tune import finetune, mergetune


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--mt-epochs", type=int, default=5)
    ap.add_argument("--mt-lr", type=float, default=1e-3)
    ap.add_argument("--w-zs", type=float, default=10.0)
    ap.add_argument("--fisher", default=None)
    ap.add_argument("--trainable", default="head", help="head, or a glob of parameter names")
    ap.add_argument("--optimizer", default="auto", choices=["auto", "sgd", "adamw"])
    ap.add_argument("--zs-term", default="quadratic", choices=["quadratic", "path"])
    ap.add_argument("--test-limit", type=int, default=500)
    ap.add_argument("--alphas", default="0:1:0.1")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    zs, ft, cont = a.work / "zeroshot", a.work / "finetuned", a.work / "continued"
    t0 = time.perf_counter()
    if not ft.exists():
        finetune(
            ft,
            model="hf:embedding-classifier",
            pretrained=str(minilm_dir()),
            data="rotten-tomatoes",
            train_size=a.train_size,
            zeroshot_head=PROMPTS,
            head_scale=20.0,
            lr=a.lr,
            epochs=a.epochs,
            batch_size=32,
            max_length=64,
            save_init=str(zs),
            seed=0,
            device="cpu",
        )
    t_ft = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = mergetune(
        cont,
        trainable=a.trainable,
        optimizer=a.optimizer,
        zs_term=a.zs_term,
        model="hf:embedding-classifier",
        pretrained=str(zs),
        finetuned=str(ft),
        data="rotten-tomatoes",
        train_size=a.train_size,
        epochs=a.mt_epochs,
        batch_size=32,
        lr=a.mt_lr,
        w_zs=a.w_zs,
        fisher=a.fisher,
        max_length=64,
        device="cpu",
        force=True,
    )
    t_mt = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = f"loss=seq-classification:rotten-tomatoes-test,limit={a.test_limit},max_length=64"
    rep = lmc(
        [zs, cont, ft],
        a.work / "lmc",
        model="hf:embedding-classifier",
        eval=[ev],
        alphas=a.alphas,
        resume=False,
    )
    t_lmc = time.perf_counter() - t0
    out = {
        "settings": vars(a) | {"work": str(a.work)},
        "seconds": {"finetune": t_ft, "mergetune": t_mt, "lmc": t_lmc},
        "mergetune_steps": res.steps,
        "barriers": {
            b.path: {"height": b.height, "at": b.at, "losses": b.losses} for b in rep.barriers
        },
    }
    (a.work / "mergetune_minilm.json").write_text(json.dumps(out, indent=2) + "\n")
    for b in rep.barriers:
        curve = " ".join(f"{x:.4f}" for x in b.losses)
        print(f"{b.path:28s} barrier {b.height:.4f} at alpha {b.at:g}   loss: {curve}")
    zc, cf, zf = (b.height for b in rep.barriers)
    l_zs, l_cont = rep.barriers[0].losses[0], rep.barriers[0].losses[-1]
    l_ft = rep.barriers[2].losses[-1]
    verdict = "both lower" if max(zc, cf) < zf else "NOT both lower"
    print(
        f"SUMMARY barriers zs->cont {zc:.4f} cont->ft {cf:.4f} direct {zf:.4f}: {verdict}; "
        f"held-out loss zs {l_zs:.4f} cont {l_cont:.4f} ft {l_ft:.4f}"
        + ("" if l_cont <= max(l_zs, l_ft) else " (continued model worse than both endpoints)")
    )


if __name__ == "__main__":
    main()
