"""The options of each built-in evaluator kind, one pydantic model per kind (extra="forbid",
typed, with defaults): `--eval NAME=KIND:ARG[,key=value...]` is validated by its kind's model
when it is parsed, before any data or model is loaded, so `sgmerge run --dry-run` checks a
recipe's evaluator strings and a misspelt key is an error instead of a silent default."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mergekit_sg.errors import SgMergeError

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
ContextInt = Annotated[int, Field(ge=2)]


class EvalOptions(BaseModel):
    """What every built-in kind shares: the metric that summarises it (`primary`) and how many
    examples to score (`limit`). `METRICS` are the metrics the kind can report."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str] = ""
    METRICS: ClassVar[tuple[str, ...]] = ()

    primary: str | None = None
    limit: PosInt | None = None

    @field_validator("primary")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        if v is not None and v not in cls.METRICS:
            raise ValueError(
                f"primary={v!r} is not a metric of {cls.KIND} ({', '.join(cls.METRICS)})"
            )
        return v


class SeqClassificationOptions(EvalOptions):
    """`seq-classification:DATA` (a built-in set such as rotten-tomatoes-test, or a CSV/TSV/JSONL
    file with text and label columns)."""

    KIND: ClassVar[str] = "seq-classification"
    METRICS: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "loss", "auc")

    labels: str | None = Field(None, description="Label names in the model's order, a+b+c.")
    seed: NonNegInt = 0
    text: str = "text"
    label: str = "label"
    auc: bool | None = None
    max_length: PosInt = 128
    batch_size: PosInt = 32


class LmPerplexityOptions(EvalOptions):
    """`lm-perplexity:FILE`: documents (lines, or the whole file; a JSONL field), or responses
    scored given their prompts (prompt=, response=)."""

    KIND: ClassVar[str] = "lm-perplexity"
    METRICS: ClassVar[tuple[str, ...]] = ("perplexity", "nll", "probability")

    prompt: str | None = None
    response: str | None = None
    unit: Literal["line", "file"] | None = None
    field: str | None = None
    max_length: ContextInt | None = None
    stride: PosInt | None = None
    batch_size: PosInt = 8
    max_tokens: PosInt = 2048
    score_first: bool = False

    @model_validator(mode="after")
    def _documents_or_pairs(self) -> LmPerplexityOptions:
        pairs = self.prompt is not None or self.response is not None
        if pairs and (self.field is not None or self.unit is not None):
            raise ValueError(
                "prompt=/response= score responses given their prompts; "
                "field= and unit= are for plain documents"
            )
        return self

    @property
    def pairs(self) -> bool:
        return self.prompt is not None or self.response is not None


class LmMultipleChoiceOptions(EvalOptions):
    """`lm-multiple-choice:FILE`: questions with choices and the answer's index."""

    KIND: ClassVar[str] = "lm-multiple-choice"
    METRICS: ClassVar[tuple[str, ...]] = ("accuracy", "accuracy_norm", "loss")

    question: str = "question"
    choices: str = "choices"
    answer: str = "answer"
    one_based: bool = False
    prompt: str | None = None
    max_length: ContextInt | None = None
    batch_size: PosInt = 16
    max_tokens: PosInt = 2048


class EmbeddingSimilarityOptions(EvalOptions):
    """`embedding-similarity:DATA` (lee, wordsim353, simlex999, or scored pairs in columns a, b,
    score of a file, or documents with a matrix= of human similarities)."""

    KIND: ClassVar[str] = "embedding-similarity"
    METRICS: ClassVar[tuple[str, ...]] = ("spearman", "pearson")

    matrix: str | None = None
    a: NonNegInt = 0
    b: NonNegInt = 1
    score: NonNegInt = 2
    batch_size: PosInt = 64
    max_length: PosInt = 256


class ClipImagesOptions(EvalOptions):
    """What both CLIP kinds read: labelled images (a folder per class, a CSV with path and label
    columns, or a CoOp split) and how to batch them."""

    METRICS: ClassVar[tuple[str, ...]] = ("top1", "top5", "loss")

    path: str = "path"
    label: str = "label"
    subset: str | None = None
    batch_size: PosInt = 64
    workers: NonNegInt = 0
    cache_mb: NonNegInt = 2048


class ClipClassifierOptions(ClipImagesOptions):
    """`clip-classifier:IMAGES`: an open_clip classifier scored with its own head."""

    KIND: ClassVar[str] = "clip-classifier"


class ClipZeroShotOptions(ClipImagesOptions):
    """`clip-zeroshot:IMAGES`: CLIP scored against text prompts of the class names."""

    KIND: ClassVar[str] = "clip-zeroshot"

    classes: str | None = None
    templates: str | None = None
    text_batch_size: PosInt = 256


class LmEvalSpecOptions(EvalOptions):
    """`lm-eval:TASK`: an lm-evaluation-harness task (evals/lm_eval_bridge.py holds the full
    options model with the task; this one checks the keys when the spec is parsed). lm-eval
    metrics are the task's own, so `metric=` is checked when the task is found."""

    KIND: ClassVar[str] = "lm-eval"

    include: str | None = None
    num_fewshot: NonNegInt | None = None
    metric: str | None = None
    batch_size: PosInt = 8
    max_length: ContextInt | None = None


SPEC_MODELS: dict[str, type[EvalOptions]] = {
    m.KIND: m
    for m in (
        SeqClassificationOptions,
        LmPerplexityOptions,
        LmMultipleChoiceOptions,
        EmbeddingSimilarityOptions,
        ClipZeroShotOptions,
        ClipClassifierOptions,
        LmEvalSpecOptions,
    )
}


def validate_options(name: str, kind: str, options: dict[str, str]) -> EvalOptions:
    """`options` (the key=value strings of one --eval) validated by `kind`'s model; every error
    is one line naming the evaluator and the key."""
    try:
        model = SPEC_MODELS[kind]
    except KeyError:
        known = ", ".join(sorted([*SPEC_MODELS, "python"]))
        raise SgMergeError(f"--eval {name}: unknown evaluator {kind!r}; known: {known}") from None
    unknown = sorted(set(options) - set(model.model_fields))
    if unknown:
        raise SgMergeError(
            f"--eval {name}: unknown option(s) {', '.join(unknown)} for {kind}; "
            f"allowed: {', '.join(model.model_fields)}"
        )
    try:
        return model.model_validate(options)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        where = f"option {key}={options.get(key, '')!r}: " if key else ""
        raise SgMergeError(f"--eval {name}: {where}{msg}") from None
