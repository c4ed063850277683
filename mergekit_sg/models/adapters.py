"""Model adapters: a checkpoint reference plus a model spec becomes a live `torch.nn.Module`
with what evaluation needs beside it (tokenizer, image preprocessing).

Specs: `open_clip:ARCH` (an open_clip classifier, `ClipClassifier`, when the directory holds
classifier_head.safetensors beside the weights), `hf:causal-lm`, `hf:seq-classification`,
`hf:encoder`, `hf` (the class named in config.json), and `python:module:function` (a user
factory called with the path)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.checkpoint import open_checkpoint
from mergekit_sg.io.reference import resolve

HF_TASKS = {
    "causal-lm": "AutoModelForCausalLM",
    "seq-classification": "AutoModelForSequenceClassification",
    "encoder": "AutoModel",
    "masked-lm": "AutoModelForMaskedLM",
    "embedding-classifier": "",  # mergekit_sg.models.embedding_classifier
}


@dataclass
class LoadedModel:
    """A live module and its companions; `kind` says which evaluators apply."""

    module: torch.nn.Module
    kind: str  # "open_clip", "hf:causal-lm", "hf:seq-classification", "hf:encoder", "python"
    spec: str
    path: Path
    tokenizer: Any = None
    preprocess: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    rename: Callable[[str], str] | None = None  # live parameter name -> name in the checkpoint
    # weight files beside a checkpoint directory that hold some of the model's tensors (an
    # open_clip classifier's head); LinearPath and fingerprints read them with the checkpoint
    side_weights: tuple[str, ...] = ()

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


def load_model(spec: str, ref: str | Path, device: str = "cpu", head: bool = True) -> LoadedModel:
    """Build the live model a spec names from a checkpoint reference, in eval mode.

    `head=False` loads an open_clip classifier folder as its plain CLIP (the head is ignored)."""
    family, _, arg = spec.partition(":")
    path = resolve(str(ref)).path
    if family == "hf" and path.is_file() and path.suffix == ".gguf":
        lm = _load_gguf(arg or "auto", path, spec)
    elif family == "hf":
        lm = _load_hf(arg or "auto", path, spec)
    elif family == "open_clip":
        lm = _load_open_clip(arg, path, spec, head)
    elif family == "python":
        lm = _load_python(arg, path, spec)
    else:
        raise SgMergeError(
            f"--model {spec!r}: unknown model spec; use open_clip:ARCH, hf[:TASK] "
            f"(tasks: {', '.join(HF_TASKS)}) or python:module:function"
        )
    lm.module.to(device).eval()
    return lm


def _load_hf(task: str, path: Path, spec: str) -> LoadedModel:
    import transformers

    if not path.is_dir() or not (path / "config.json").exists():
        raise SgMergeError(f"{path}: a Hugging Face model needs a directory with config.json")
    from mergekit_sg.models import embedding_classifier as ec

    if task == "embedding-classifier" or (task == "auto" and (path / ec.HEAD_FILE).exists()):
        if not (path / ec.HEAD_FILE).exists():
            raise SgMergeError(f"{path}: no {ec.HEAD_FILE}; it is not an embedding classifier")
        module = ec.load_embedding_classifier(path)
        tok = transformers.AutoTokenizer.from_pretrained(path)
        return LoadedModel(
            module,
            "hf:embedding-classifier",
            spec,
            path,
            tokenizer=tok,
            rename=ec.checkpoint_name,
            side_weights=(ec.HEAD_WEIGHTS,),
        )
    if task == "auto":
        archs = json.loads((path / "config.json").read_text()).get("architectures") or [""]
        cls = getattr(transformers, archs[0], None) or transformers.AutoModel
        task = _task_of(archs[0])
    else:
        if task not in HF_TASKS:
            raise SgMergeError(f"--model {spec!r}: unknown task; choose from {', '.join(HF_TASKS)}")
        cls = getattr(transformers, HF_TASKS[task])
    transformers.utils.logging.disable_progress_bar()
    module = cls.from_pretrained(path)
    tokenizer = None
    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return LoadedModel(module, f"hf:{task}", spec, path, tokenizer=tokenizer)


def _load_gguf(task: str, path: Path, spec: str) -> LoadedModel:
    """A GGUF file as a live Hugging Face model: the class and tokenizer transformers builds
    from its metadata (cached side folder), the weights dequantised by io/gguf_read; tensors
    tied in the model (lm_head to the embedding) are the only ones the file may lack."""
    import transformers

    from mergekit_sg.io.gguf_read import side_files_dir

    side = side_files_dir(path)
    config = transformers.AutoConfig.from_pretrained(side)
    if task == "auto":
        task = _task_of((getattr(config, "architectures", None) or [""])[0])
    if task not in HF_TASKS or task == "embedding-classifier":
        raise SgMergeError(f"--model {spec!r}: a GGUF file loads as hf:causal-lm or hf:encoder")
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the seed
        module = getattr(transformers, HF_TASKS[task]).from_config(config).float()
    with open_checkpoint(path) as ck:
        sd = {n: ck.read(n) for n in ck.tensors}
    own = module.state_dict()
    shared = {t.data_ptr() for n, t in own.items() if n in sd}
    missing = [n for n in own if n not in sd and own[n].data_ptr() not in shared]
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        from mergekit_sg.errors import first_few

        raise SgMergeError(
            f"{path}: does not fit {type(module).__name__}: missing "
            f"{first_few(missing) or 'none'}, unexpected {first_few(unexpected) or 'none'}"
        )
    module.load_state_dict(sd, strict=False)
    tokenizer = None
    if (side / "tokenizer_config.json").exists():
        tokenizer = transformers.AutoTokenizer.from_pretrained(side)
    return LoadedModel(module, f"hf:{task}", spec, path, tokenizer=tokenizer)


def _task_of(arch: str) -> str:
    for suffix, task in (
        ("ForCausalLM", "causal-lm"),
        ("ForSequenceClassification", "seq-classification"),
        ("ForMaskedLM", "masked-lm"),
    ):
        if arch.endswith(suffix):
            return task
    return "encoder"


def _load_open_clip(arch: str, path: Path, spec: str, head: bool = True) -> LoadedModel:
    try:
        import open_clip
    except ImportError:
        raise SgMergeError("open_clip models need: pip install 'mergekit-sg[open_clip]'") from None
    if path.is_dir() and (path / "open_clip_config.json").exists():
        module = open_clip.create_model(f"local-dir:{path}")
        arch = arch or json.loads((path / "open_clip_config.json").read_text()).get(
            "model_name", ""
        )
    else:
        if not arch or open_clip.get_model_config(arch) is None:
            raise SgMergeError(
                f"--model {spec!r}: name an open_clip architecture, e.g. open_clip:ViT-B-16"
            )
        module = open_clip.create_model(arch)
        load_state(module, path)
    visual = getattr(module, "visual", None)
    size = getattr(visual, "image_size", 224)
    mean = getattr(visual, "image_mean", None)
    std = getattr(visual, "image_std", None)
    preprocess = open_clip.image_transform(size, is_train=False, mean=mean, std=std)
    tokenizer = open_clip.get_tokenizer(arch) if arch else open_clip.get_tokenizer("ViT-B-32")
    from mergekit_sg.models import clip_classifier as cc

    if head and cc.has_head(path):
        weight, labels = cc.read_head(path)
        return LoadedModel(
            cc.ClipClassifier(module, weight, labels),
            "open_clip",
            spec,
            path,
            tokenizer=tokenizer,
            preprocess=preprocess,
            extra={"labels": labels},
            rename=cc.checkpoint_name,
            side_weights=(cc.HEAD_WEIGHTS,),
        )
    return LoadedModel(module, "open_clip", spec, path, tokenizer=tokenizer, preprocess=preprocess)


def _load_python(target: str, path: Path, spec: str) -> LoadedModel:
    mod_name, _, fn_name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError, ValueError):
        raise SgMergeError(
            f"--model {spec!r}: cannot import {target!r} (module:function)"
        ) from None
    made = fn(path)
    if isinstance(made, LoadedModel):
        return made
    if not isinstance(made, torch.nn.Module):
        raise SgMergeError(f"--model {spec!r}: the factory must return a torch.nn.Module")
    return LoadedModel(made, "python", spec, path)


def load_state(module: torch.nn.Module, ref: str | Path) -> None:
    """Load a checkpoint's tensors (any supported format) into a module, strictly."""
    with open_checkpoint(ref) as ck:
        sd = {n: ck.read(n) for n in ck.tensors}
        for alias, kept in ck.aliases.items():
            sd[alias] = sd[kept]
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        from mergekit_sg.errors import first_few

        raise SgMergeError(
            f"{ref}: does not fit the model: missing {first_few(missing) or 'none'}, "
            f"unexpected {first_few(unexpected) or 'none'}"
        )
    module.load_state_dict(sd, strict=True)
