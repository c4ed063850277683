"""Text tasks: sequence classification (a sentence-embedding encoder with a zero-shot head, or
a Hugging Face `...ForSequenceClassification`) and causal-LM next-token training with the
prompt tokens optionally masked out of the loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals.text import pad, pad_id
from mergekit_sg.io.reference import resolve
from mergekit_sg.models import embedding_classifier as ec
from mergekit_sg.tune.tasks.base import IGNORE, StepOutput, Task
from mergekit_sg.tune.tasks.data import classification_data, lm_data, subset
from mergekit_sg.tune.tasks.task_options import TaskOptions


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise SgMergeError(f"{path}: no usable tokenizer files ({e.__class__.__name__})") from None
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def _prompts(text: str | None, labels: list[str], spec: str) -> list[str]:
    prompts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not prompts:
        raise SgMergeError(
            f"--model {spec} on a bare encoder needs --zeroshot-head with one prompt per label "
            f"({', '.join(labels)}), e.g. 'a bad movie,a good movie'"
        )
    if len(prompts) != len(labels):
        raise SgMergeError(
            f"--zeroshot-head has {len(prompts)} prompt(s) for {len(labels)} label(s) "
            f"({', '.join(labels)})"
        )
    return prompts


def _align_labels(examples: list[Any], data_labels: list[str], model_labels: list[str]) -> list:
    """Re-index examples whose label names are the model's in another order."""
    if data_labels == model_labels or all(n.isdigit() for n in data_labels):
        return examples
    if sorted(data_labels) != sorted(model_labels):
        raise SgMergeError(
            f"the data's labels ({', '.join(data_labels)}) are not the model's "
            f"({', '.join(model_labels)})"
        )
    remap = [model_labels.index(n) for n in data_labels]
    return [type(e)(e.text, remap[e.label]) for e in examples]


class _TokenTask(Task):
    """Examples are (token ids, labels): batches are padded to their longest example."""

    def length(self, feature: Any) -> int:
        return len(feature[0])

    def batch_labels(self, features: list[Any]) -> torch.Tensor:
        """The labels of a batch: one class per example, or one target per token."""
        raise NotImplementedError

    def collate(self, features: list[Any], device: torch.device) -> dict[str, torch.Tensor]:
        ids, mask = pad([f[0] for f in features], pad_id(self.tokenizer))
        return {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "labels": self.batch_labels(features).to(device),
        }


class TextClassificationTask(_TokenTask):
    """Texts -> class logits; the loss is cross-entropy and distillation is on the logits."""

    def __init__(self, spec: str, path: Path, module: Any, tokenizer: Any, labels: list[str]):
        self.spec, self.path, self.module, self.tokenizer = spec, path, module, tokenizer
        self.labels = labels
        self.embedding = isinstance(module, ec.EmbeddingClassifier)
        self.kind = "hf:embedding-classifier" if self.embedding else "hf:seq-classification"
        self.features: list[Any] = []

    @classmethod
    def build(cls, opts: TaskOptions, arg: str, device: torch.device) -> TextClassificationTask:
        _quiet_transformers()
        path = resolve(opts.pretrained).path
        data = classification_data(opts.data, opts.text_column, opts.label_column, opts.labels)
        examples = subset(data.examples, opts.train_size, opts.seed)
        tok = load_tokenizer(path)
        labels = list(data.labels)
        if arg == "embedding-classifier":
            if (path / ec.HEAD_FILE).exists():
                module = ec.load_embedding_classifier(path)
                examples = _align_labels(examples, labels, module.labels)
                labels = list(module.labels)
            else:
                module = ec.EmbeddingClassifier(_encoder(path), labels, opts.head_scale)
                ec.zero_shot_head(module, tok, _prompts(opts.zeroshot_head, labels, opts.model))
        else:
            if opts.zeroshot_head:
                raise SgMergeError(
                    "--zeroshot-head is for hf:embedding-classifier and open_clip models"
                )
            module = _seq_classifier(path, labels, tok, opts.seed)
            names = [module.config.id2label[i] for i in range(module.config.num_labels)]
            if len(names) != len(labels):
                raise SgMergeError(
                    f"{path}: the model has {len(names)} classes, the data {len(labels)}"
                )
            examples = _align_labels(examples, labels, names)
            labels = names
        task = cls(opts.model, path, module.float().to(device), tok, labels)
        ids = tok([e.text for e in examples], truncation=True, max_length=opts.max_length)
        task.features = [
            (list(i), e.label) for i, e in zip(ids["input_ids"], examples, strict=True)
        ]
        if not task.features:
            raise SgMergeError(f"--data {opts.data}: no examples")
        return task

    def batch_labels(self, features: list[Any]) -> torch.Tensor:
        return torch.tensor([f[1] for f in features], dtype=torch.long)

    def forward(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out.logits if hasattr(out, "logits") else out
        return StepOutput(logits, batch["labels"], logits)

    def head_modules(self) -> list[str]:
        if self.embedding:
            return ["head"]
        return _head_children(self.module)

    def checkpoint_name(self, name: str) -> str:
        return ec.checkpoint_name(name) if self.embedding else name

    def save(self, module: torch.nn.Module, out: Path) -> None:
        if isinstance(module, ec.EmbeddingClassifier):
            ec.save_embedding_classifier(module, out, source_dir=self.path)
        else:
            module.save_pretrained(out)
            self.tokenizer.save_pretrained(out)


def _encoder(path: Path) -> torch.nn.Module:
    return ec.load_encoder(path)


def _seq_classifier(path: Path, labels: list[str], tok: Any, seed: int) -> Any:
    """The checkpoint's own classifier when it has one for these classes; else its encoder
    with a new, seeded head (named by the data's labels)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    config = AutoConfig.from_pretrained(path)
    archs = getattr(config, "architectures", None) or [""]
    if archs[0].endswith("ForSequenceClassification"):
        model = AutoModelForSequenceClassification.from_pretrained(path)
    else:
        torch.manual_seed(seed)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialised head" is the point here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={n: i for i, n in enumerate(labels)},
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_id(tok)
    return model


def _head_children(module: torch.nn.Module) -> list[str]:
    """Top-level submodules with parameters other than the base model (classifier, score)."""
    prefix = getattr(module, "base_model_prefix", "")
    return [
        n
        for n, child in module.named_children()
        if n != prefix and any(True for _ in child.parameters())
    ]


class CausalLMTask(_TokenTask):
    """Next-token cross-entropy over the scored tokens; distillation on the token logits."""

    kind = "hf:causal-lm"

    def __init__(self, spec: str, path: Path, module: Any, tokenizer: Any) -> None:
        self.spec, self.path, self.module, self.tokenizer = spec, path, module, tokenizer
        self.labels: list[str] = []
        self.features: list[Any] = []

    @classmethod
    def build(cls, opts: TaskOptions, device: torch.device) -> CausalLMTask:
        from transformers import AutoModelForCausalLM

        _quiet_transformers()
        if opts.zeroshot_head:
            raise SgMergeError(
                "--zeroshot-head is for hf:embedding-classifier and open_clip models"
            )
        path = resolve(opts.pretrained).path
        data = lm_data(opts.data, opts.text_column, opts.prompt_column, opts.completion_column)
        examples = subset(data.examples, opts.train_size, opts.seed)
        if path.is_file() and path.suffix == ".gguf":  # dequantised by io/gguf_read
            from mergekit_sg.models import load_model

            lm = load_model("hf:causal-lm", opts.pretrained)
            module, tok = lm.module, lm.tokenizer
            if tok.pad_token_id is None and tok.eos_token_id is not None:
                tok.pad_token = tok.eos_token
        else:
            tok = load_tokenizer(path)
            module = AutoModelForCausalLM.from_pretrained(path)
        task = cls(opts.model, path, module.float().to(device), tok)
        for e in examples:
            ids, labels = encode_lm(tok, e.prompt, e.completion, opts.mask_prompt, opts.max_length)
            if any(t != IGNORE for t in labels[1:]):
                task.features.append((ids, labels))
        if not task.features:
            raise SgMergeError(f"--data {opts.data}: no example has a token to learn")
        return task

    def batch_labels(self, features: list[Any]) -> torch.Tensor:
        return pad([f[1] for f in features], IGNORE)[0]

    def forward(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, targets = logits[:, :-1], batch["labels"][:, 1:]
        return StepOutput(logits, targets, logits, targets != IGNORE)

    def head_modules(self) -> list[str]:
        return ["lm_head"]

    def save(self, module: torch.nn.Module, out: Path) -> None:
        module.save_pretrained(out)
        self.tokenizer.save_pretrained(out)


def encode_lm(
    tok: Any, prompt: str, completion: str, mask_prompt: bool, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids (the tokenizer's special tokens, the prompt, the completion, EOS) and the
    labels: the ids, with the prompt's positions set to IGNORE when `mask_prompt`."""
    p = list(tok(prompt, add_special_tokens=True)["input_ids"])
    c = list(tok(completion, add_special_tokens=False)["input_ids"])
    if tok.eos_token_id is not None:
        c.append(tok.eos_token_id)
    ids = (p + c)[:max_length]
    labels = ([IGNORE] * len(p) if mask_prompt else p) + c
    return ids, labels[:max_length]
