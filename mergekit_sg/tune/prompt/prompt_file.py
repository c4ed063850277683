"""CoOp prompts on disk and in use: `prompt.safetensors` holds the context tensor `ctx` and,
in its metadata, everything that reproduces the evaluation (the model spec and CLIP weights,
class names, the prompt form, n_ctx, init, the training configuration).

`PromptModel` is the prompt over a frozen CLIP whose only tensor is the context, so
`LinearPath` (and `sgmerge lmc`) moves the prompt alone:

    sgmerge lmc zs/ continued/ coop/ --model python:mergekit_sg.tune.prompt:prompt_model \\
        --eval base=python:mergekit_sg.tune.prompt:prompt_eval,data=test/,classes=base"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from mergekit_sg.errors import SgMergeError
from mergekit_sg.models.adapters import LoadedModel, load_model
from mergekit_sg.models.coop import PromptLearner, prompt_features, template_features
from mergekit_sg.tune.prompt.images import Images, loader, read_images, split_classes

PROMPT_FILE = "prompt.safetensors"
PROMPT_JSON = "prompt.json"
META_KEY = "sgmerge.prompt"
SPLITS = ("all", "base", "novel")


def clip_logits(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """s * I @ norm(T)^T, with I already normalised."""
    return scale * image @ F.normalize(text, dim=-1).T


def cosine_surrogate(t_w: torch.Tensor, t_zs: torch.Tensor) -> torch.Tensor:
    """1 - mean_c cos(T(w)_c, T_zs_c): equals 0.5 * mean ||norm(T(w)) - norm(T_zs)||^2.
    MERGETUNE's L_zs in prompt mode, and KgCoOp's knowledge-guided term (`coop --kg-weight`)."""
    return 1 - F.cosine_similarity(t_w, t_zs, dim=-1).mean()


class PromptModel(torch.nn.Module):
    """Context vectors before each class name ("[ctx] <class>."), encoded by a frozen CLIP
    that is kept out of the state dict: `ctx` is the module's one tensor."""

    def __init__(self, loaded: LoadedModel, ctx: torch.Tensor, meta: dict[str, Any]) -> None:
        super().__init__()
        self.ctx = torch.nn.Parameter(ctx.detach().clone(), requires_grad=False)
        self.__dict__["loaded"] = loaded  # not a submodule: LinearPath sees ctx only
        self.meta = meta
        self.feature_cache: dict[Any, torch.Tensor] = {}
        self._learners: dict[tuple[str, ...], PromptLearner] = {}

    @property
    def clip(self) -> torch.nn.Module:
        return self.loaded.module

    def _apply(self, fn: Any, recurse: bool = True) -> PromptModel:
        self.clip._apply(fn)
        for learner in self._learners.values():
            learner._apply(fn)
        return super()._apply(fn, recurse)

    def learner(self, classnames: list[str]) -> PromptLearner:
        key = tuple(classnames)
        if key not in self._learners:
            self._learners[key] = build_learner(
                self.clip, self.loaded.tokenizer, classnames, self.meta
            ).requires_grad_(False)
        return self._learners[key]

    def text_features(self, classnames: list[str], ctx: torch.Tensor | None = None) -> torch.Tensor:
        """T(ctx) for these classes, not normalised."""
        ctx = self.ctx if ctx is None else ctx
        return prompt_features(self.clip, self.learner(classnames), ctx.to(self.ctx.device))

    def scale(self) -> torch.Tensor:
        return self.clip.logit_scale.detach().exp().float()


def build_learner(
    clip: torch.nn.Module,
    tokenizer: Any,
    classnames: list[str],
    meta: dict[str, Any],
    generator: torch.Generator | None = None,
) -> PromptLearner:
    """The token layout of a prompt ("[ctx] <class>.") for any class names; its own `ctx` is
    the init words' embeddings, or N(0, 0.02) drawn from `generator` without init words."""
    init = meta.get("init") or None
    gen = generator if generator is not None else torch.Generator()
    return PromptLearner(clip, tokenizer, classnames, meta["n_ctx"], init=init, generator=gen)


def prompt_meta(
    model: str,
    pretrained: str,
    classnames: list[str],
    n_ctx: int,
    init: str | None,
    trained_on: str,
    config: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    from mergekit_sg.version import TOOLKIT

    stub = init if init else " ".join(["X"] * n_ctx)
    return {
        "format": "coop-prompt",
        "model": model,
        "pretrained": pretrained,
        "classnames": list(classnames),
        "n_ctx": n_ctx,
        "init": init or "",
        "prompt": f"[{n_ctx} context vectors, init {stub!r}] {{}}.",
        "trained_on": trained_on,
        "config": config,
        "toolkit": TOOLKIT,
        **extra,
    }


def save_prompt(out: Path, ctx: torch.Tensor, meta: dict[str, Any]) -> Path:
    """`out/prompt.safetensors` (ctx + metadata) and a readable `out/prompt.json`."""
    text = json.dumps(meta, default=str)
    save_file(
        {"ctx": ctx.detach().float().contiguous().cpu()},
        out / PROMPT_FILE,
        metadata={"format": "pt", META_KEY: text},
    )
    (out / PROMPT_JSON).write_text(json.dumps(json.loads(text), indent=2) + "\n")
    return out / PROMPT_FILE


def read_prompt(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(ctx, metadata) from a prompt directory or its prompt.safetensors."""
    p = Path(path).expanduser()
    f = p / PROMPT_FILE if p.is_dir() else p
    if not f.is_file():
        raise SgMergeError(f"{path}: no {PROMPT_FILE} (made by sgmerge coop or mergetune)")
    try:
        with safe_open(str(f), framework="pt") as st:
            meta = json.loads((st.metadata() or {})[META_KEY])
            ctx = st.get_tensor("ctx")
    except Exception as e:  # a missing key, bad JSON or a file safetensors cannot read
        raise SgMergeError(f"{f}: not a CoOp prompt file ({e.__class__.__name__})") from None
    return ctx, meta


def load_prompt(
    path: str | Path, device: str = "cpu", pretrained: str | None = None
) -> PromptModel:
    """The prompt and the CLIP it was trained with (or `pretrained`), ready to evaluate."""
    ctx, meta = read_prompt(path)
    clip = load_model(meta["model"], pretrained or meta["pretrained"], device, head=False)
    clip.module.requires_grad_(False)
    return PromptModel(clip, ctx, meta).to(device)


def prompt_model(path: str | Path) -> LoadedModel:
    """`--model python:mergekit_sg.tune.prompt:prompt_model`: a prompt as a live model."""
    pm = load_prompt(path)
    return LoadedModel(pm, "python", "python:mergekit_sg.tune.prompt:prompt_model", Path(path))


@torch.no_grad()
def image_features(pm: PromptModel, images: Images, batch_size: int = 64) -> torch.Tensor:
    """Normalised image features [N, D] with the model's evaluation transform."""
    out = []
    device = pm.ctx.device
    for pixels, _ in loader(images, pm.loaded.preprocess, batch_size, shuffle=False):
        out.append(F.normalize(pm.clip.encode_image(pixels.to(device)).float(), dim=-1))
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def prompt_logits(
    pm: PromptModel,
    images: Images,
    feats: torch.Tensor | None = None,
    batch_size: int = 64,
    template: str | None = None,
) -> torch.Tensor:
    """Logits [N, C] of the prompt's classifier over `images`' classes (or of CLIP's zero-shot
    classifier from a hand-written `template`): s * I @ norm(T)^T."""
    if feats is None:
        feats = image_features(pm, images, batch_size)
    if template is not None:
        text = template_features(pm.clip, pm.loaded.tokenizer, images.classnames, template)
    else:
        text = F.normalize(pm.text_features(images.classnames).float(), dim=-1)
    return pm.scale() * feats.to(text.device) @ text.T


def class_metrics(logits: torch.Tensor, labels: list[int] | torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of logits [N, C]."""
    y = torch.as_tensor(labels, device=logits.device)
    return {
        "accuracy": float((logits.argmax(-1) == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
    }


@torch.no_grad()
def evaluate(
    pm: PromptModel,
    images: Images,
    feats: torch.Tensor | None = None,
    batch_size: int = 64,
    template: str | None = None,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of the prompt's classifier over `images`' classes
    (or of CLIP's zero-shot classifier from a hand-written `template`)."""
    return class_metrics(prompt_logits(pm, images, feats, batch_size, template), images.labels)


def _prompt_outputs(
    model: LoadedModel,
    data: str,
    classes: str = "all",
    classnames: str | None = None,
    batch_size: str = "64",
    template: str | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """(logits, labels) of the live prompt on `data` (or of the zero-shot `template`);
    image features are computed once per model."""
    pm = model.module
    if not isinstance(pm, PromptModel):
        raise SgMergeError("prompt_eval needs --model python:mergekit_sg.tune.prompt:prompt_model")
    if classes not in SPLITS:
        raise SgMergeError(f"prompt_eval: classes={classes!r}; use one of {', '.join(SPLITS)}")
    images = split_classes(read_images(data, classnames), classes)
    key = (data, classes, classnames)
    if key not in pm.feature_cache:
        pm.feature_cache[key] = image_features(pm, images, int(batch_size))
    with torch.no_grad():
        logits = prompt_logits(pm, images, pm.feature_cache[key], template=template)
    return logits.float().cpu(), list(images.labels)


def prompt_eval(
    model: LoadedModel,
    data: str,
    classes: str = "all",
    classnames: str | None = None,
    batch_size: str = "64",
    template: str | None = None,
) -> dict[str, float]:
    """`--eval NAME=python:mergekit_sg.tune.prompt:prompt_eval,data=DIR[,classes=base|novel]`:
    accuracy and loss of the live prompt (with `template=`, of the zero-shot classifier from
    that hand-written template). It takes part in `scan --ensemble`: the prompt's logits mix
    as CLIP's (probabilities averaged), e.g. a learned prompt ensembled with the zero-shot one."""
    return class_metrics(*_prompt_outputs(model, data, classes, classnames, batch_size, template))


prompt_eval.outputs = _prompt_outputs  # type: ignore[attr-defined]
prompt_eval.score = class_metrics  # type: ignore[attr-defined]
