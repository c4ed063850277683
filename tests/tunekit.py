"""Small material for the fine-tuning tests: word-level tokenizers for the tiny BERT and Llama
fixtures, a learnable sentiment-like CSV, and an image folder."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

GOOD = ["good", "great", "fine", "superb", "lovely"]
BAD = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "a", "film", "movie", "was", "is", "very", "quite", "plot", "acting", "story"]
WORDS = GOOD + BAD + FILLER


def bert_with_tokenizer(src: Path, dst: Path) -> Path:
    """A copy of a tiny BERT checkpoint with a WordPiece vocab of its 64 ids."""
    from transformers import BertTokenizer

    shutil.copytree(src, dst)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + WORDS
    vocab += [f"w{i}" for i in range(64 - len(vocab))]
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(dst / "vocab.txt")).save_pretrained(dst)
    return dst


def llama_with_tokenizer(src: Path, dst: Path) -> Path:
    """A copy of a tiny Llama checkpoint with a word-level fast tokenizer (BOS added)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    shutil.copytree(src, dst)
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", *WORDS, "?", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.save_pretrained(dst)
    return dst


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts whose label (pos/neg) is given by one sentiment word among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        word = rng.choice(GOOD if label == "pos" else BAD)
        words = rng.sample(FILLER, 4)
        words.insert(rng.randrange(5), word)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    """Tiny PNGs: one colour per class plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((40, 40, 3), dtype=np.float32)
            base[..., c % 3] = 200
            img = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype("uint8")
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root
