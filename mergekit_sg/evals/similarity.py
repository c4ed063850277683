"""`embedding-similarity`: how well a text encoder's cosine similarities agree with human
similarity judgements, a measure of the general-purpose ability fine-tuning can erode.

Pairs (word or sentence pairs with human scores: CSV/TSV `a,b,score`, or the built-in
`wordsim353`, `simlex999`) report Spearman (primary) and Pearson. A document set with a human
similarity matrix (a text file, one document per line, plus `matrix=FILE` of N x N numbers, or
the built-in `lee`: 50 news documents) reports Pearson (primary) and Spearman over the upper
triangle. Embeddings: mean-pooled, L2-normalised last hidden states of an hf encoder (the base
encoder of a task model), or open_clip's text tower."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals import datasets
from mergekit_sg.evals.base import BaseEvaluator, EvalSpec
from mergekit_sg.evals.common import existing
from mergekit_sg.evals.specs import EmbeddingSimilarityOptions
from mergekit_sg.evals.stats import pearson, spearman
from mergekit_sg.evals.text import TokenCache, embed_texts
from mergekit_sg.models.adapters import LoadedModel
from mergekit_sg.models.ensemble import Mix, mix_embeddings

Pair = tuple[str, str, float]


@dataclass
class EmbeddingSimilarity(BaseEvaluator):
    pairs: list[Pair] | None = None
    docs: list[str] | None = None
    matrix: list[list[float]] | None = None
    batch_size: int = 64
    max_length: int = 256
    _cache: TokenCache = field(default_factory=TokenCache, repr=False)

    def predicted(self, model: LoadedModel) -> tuple[list[float], list[float]]:
        """(cosine similarities, human scores) over the pairs or the upper triangle."""
        return self.similarities(self.outputs(model))

    def outputs(self, model: LoadedModel) -> torch.Tensor:
        """Normalised embeddings [N, D] of the pairs' distinct texts, or of the documents."""
        if self.pairs is not None:
            return self._embed(model, self._words())
        assert self.docs is not None
        return self._embed(model, self.docs)

    def _words(self) -> list[str]:
        assert self.pairs is not None
        return list(dict.fromkeys(t for a, b, _ in self.pairs for t in (a, b)))

    def similarities(self, emb: torch.Tensor) -> tuple[list[float], list[float]]:
        """(cosine similarities, human scores) from normalised embeddings."""
        if self.pairs is not None:
            pos = {w: i for i, w in enumerate(self._words())}
            ia = torch.tensor([pos[a] for a, _, _ in self.pairs])
            ib = torch.tensor([pos[b] for _, b, _ in self.pairs])
            cos = (emb[ia] * emb[ib]).sum(-1).double().tolist()
            return cos, [s for _, _, s in self.pairs]
        assert self.docs is not None and self.matrix is not None
        sim = (emb @ emb.T).double()
        n = len(self.docs)
        iu = torch.triu_indices(n, n, offset=1)
        human = [self.matrix[i][j] for i, j in iu.T.tolist()]
        return sim[iu[0], iu[1]].tolist(), human

    def mixed(
        self, out0: torch.Tensor, out1: torch.Tensor, alpha: float, mix: Mix
    ) -> dict[str, float]:
        """Correlations of the mixture: normalised embeddings averaged, then renormalised."""
        return self.scores(mix_embeddings(out0, out1, alpha))

    def scores(self, emb: torch.Tensor) -> dict[str, float]:
        pred, human = self.similarities(emb)
        return {"spearman": spearman(pred, human), "pearson": pearson(pred, human)}

    def _embed(self, model: LoadedModel, texts: list[str]) -> torch.Tensor:
        return embed_texts(
            model,
            texts,
            self._cache,
            batch_size=self.batch_size,
            max_length=self.max_length,
            label=self.name,
        )

    def __call__(self, model: LoadedModel) -> dict[str, float]:
        return self.scores(self.outputs(model))


def read_pairs(path: Path, a: int, b: int, score: int) -> list[Pair]:
    """Pairs from a CSV/TSV (tab if the file has tabs); '#' lines and a header are skipped."""
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if "\t" in text else ","
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    out = []
    for i, row in enumerate(csv.reader(lines, delimiter=delimiter)):
        try:
            out.append((row[a].strip(), row[b].strip(), float(row[score])))
        except (IndexError, ValueError):
            if i == 0:
                continue  # a header line
            raise SgMergeError(
                f"{path}: line {i + 1} ({','.join(row)!r}) is not word,word,score"
            ) from None
    return out


def read_matrix(path: Path, n: int) -> list[list[float]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            try:
                rows.append([float(v) for v in line.replace(",", " ").split()])
            except ValueError:
                raise SgMergeError(f"{path}: {line[:40]!r} is not a row of numbers") from None
    if len(rows) != n or any(len(r) != n for r in rows):
        raise SgMergeError(f"{path}: expected a {n}x{n} matrix for the {n} documents")
    return rows


def embedding_similarity(spec: EvalSpec, o: EmbeddingSimilarityOptions) -> EmbeddingSimilarity:
    pairs: list[Pair] | None = None
    docs = matrix = None
    if spec.arg == "lee":
        docs, matrix = datasets.lee()
    elif spec.arg in ("wordsim353", "simlex999"):
        pairs = list(getattr(datasets, spec.arg)())
    else:
        path = existing(spec.arg, spec)
        matrix_file = o.matrix
        if matrix_file:
            docs = [d.strip() for d in path.read_text(encoding="utf-8").splitlines() if d.strip()]
            matrix = read_matrix(existing(matrix_file, spec), len(docs))
        else:
            pairs = read_pairs(path, o.a, o.b, o.score)
            if len(pairs) < 2:
                raise SgMergeError(f"--eval {spec.name}: {path} needs at least two scored pairs")
    default = "spearman" if pairs is not None else "pearson"
    primary = o.primary or default
    ev = EmbeddingSimilarity(
        spec.name,
        spec.role,
        primary,
        frozenset(),
        pairs=pairs,
        docs=docs,
        matrix=matrix,
        batch_size=o.batch_size,
        max_length=o.max_length,
    )
    return ev
