"""MERGETUNE head mode on the real all-MiniLM-L6-v2 and real Rotten Tomatoes reviews, measured
with `sgmerge lmc` (the in-memory `path.run.lmc`) on the held-out review loss.

The pair is the demo's: the zero-shot model is MiniLM with the head "a bad movie" / "a good
movie" (scale 20), the fine-tuned model is the whole model trained on Rotten Tomatoes
(`sgmerge finetune`). MERGETUNE then continues the fine-tuned model's head only (W = 10,
W_lmc = 1, K = 5, identity Fisher unless --fisher), and the three paths zero-shot -> continued,
continued -> fine-tuned and zero-shot -> fine-tuned are probed with their barriers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mergetune_minilm.py --work /tmp/mt-minilm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mergekit_sg.demo import PROMPTS, minilm_dir
from mergekit_sg.path.run import lmc
from mergekit_sg.tune.loop import finetune
from mergekit_sg.tune.mergetune import mergetune


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
        trainable="head",
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
    direct = rep.barriers[2].height
    both = max(rep.barriers[0].height, rep.barriers[1].height)
    verdict = "lower" if both < direct else "NOT lower"
    print(
        f"SUMMARY both MERGETUNE barriers (max {both:.4f}) are {verdict} than the direct "
        f"zero-shot->fine-tuned barrier ({direct:.4f})"
    )


if __name__ == "__main__":
    main()
