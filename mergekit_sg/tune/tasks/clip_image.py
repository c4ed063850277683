"""open_clip image classification as WiSE-FT fine-tunes it: the image tower plus a head
initialised from zero-shot text embeddings; the text tower is frozen. Distillation compares
the normalised image features of student and frozen teacher through the fixed zero-shot head
(both projected on the same class text embeddings), so it constrains the features, not the
head. Saved in open_clip's layout (`open_clip_model.safetensors` + `open_clip_config.json`,
loadable by `open_clip:ARCH` and interpolated like any open_clip checkpoint), with the trained
head beside it in `classifier_head.safetensors`. The head starts from zero-shot text embeddings:
each class's prompt templates encoded, normalised, averaged, normalised again, times the logit
scale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mergekit_sg.errors import SgMergeError
from mergekit_sg.models.adapters import LoadedModel, load_model
from mergekit_sg.models.clip_classifier import HEAD_META, HEAD_WEIGHTS, ClipClassifier
from mergekit_sg.tune.tasks.base import StepOutput, Task
from mergekit_sg.tune.tasks.data import image_folder, subset
from mergekit_sg.tune.tasks.task_options import TaskOptions

PREFIX = "clip."
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def openai_templates() -> list[str]:
    """The 80 OpenAI ImageNet prompt templates the clip-zeroshot evaluator uses."""
    from mergekit_sg.evals import clip_zeroshot

    return list(clip_zeroshot.OPENAI_IMAGENET_TEMPLATES)


def parse_templates(text: str | None) -> list[str]:
    """'openai', or a comma list of templates with {} where the class name goes."""
    if not text:
        return list(DEFAULT_TEMPLATES)
    if text.strip() == "openai":
        return openai_templates()
    out = [t.strip() for t in text.split(",") if t.strip()]
    return [t if "{}" in t else t + " {}" for t in out]


@torch.no_grad()
def zeroshot_weights(
    clip: Any, tokenizer: Any, classnames: list[str], templates: list[str]
) -> torch.Tensor:
    """[C, D]: per class, the normalised mean of the normalised template embeddings, times
    the model's logit scale (exp of its log-scale parameter)."""
    device = next(clip.parameters()).device
    rows = []
    for name in classnames:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = F.normalize(clip.encode_text(tokens).float(), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=-1))
    scale = clip.logit_scale.exp().float() if hasattr(clip, "logit_scale") else 100.0
    return torch.stack(rows) * scale


class ClipTask(Task):
    kind = "open_clip"
    default_lr = 3e-5
    default_weight_decay = 0.1
    default_lora_targets = ("c_fc", "c_proj")

    def __init__(self, lm: LoadedModel, arch: str, module: ClipClassifier, labels: list[str]):
        self.spec, self.path, self.arch = lm.spec, lm.path, arch
        self.tokenizer, self.preprocess = lm.tokenizer, lm.preprocess
        self.module, self.labels = module, labels
        self.templates: list[str] = []
        self.features: list[Any] = []
        self.zeroshot = module.head.weight.detach().clone()  # fixed: distillation's projection

    @classmethod
    def build(cls, opts: TaskOptions, arch: str, device: torch.device) -> ClipTask:
        data = image_folder(opts.data, opts.labels or None)
        lm = load_model(opts.model, opts.pretrained, str(device), head=False)
        if not arch and not _config_of(lm.path):
            raise SgMergeError("--model open_clip needs the architecture: open_clip:ARCH")
        clip = lm.module.float()
        clip.requires_grad_(False)
        clip.visual.requires_grad_(True)
        classnames = [n.replace("_", " ") for n in data.labels]
        templates = parse_templates(opts.zeroshot_head)
        head = zeroshot_weights(clip, lm.tokenizer, classnames, templates)
        classifier = ClipClassifier(clip, head, list(data.labels)).to(device)
        task = cls(lm, arch, classifier, list(data.labels))
        task.templates = templates
        task.features = [
            (e.path, e.label) for e in subset(data.examples, opts.train_size, opts.seed)
        ]
        return task

    def collate(self, features: list[Any], device: torch.device) -> dict[str, torch.Tensor]:
        from PIL import Image

        images = []
        for path, _ in features:
            with Image.open(path) as im:
                images.append(self.preprocess(im.convert("RGB")))
        labels = torch.tensor([f[1] for f in features], dtype=torch.long)
        return {"images": torch.stack(images).to(device), "labels": labels.to(device)}

    def forward(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        feats = module.features(batch["images"])
        logits = module.head(feats)
        kd = feats @ self.zeroshot.to(feats.device, feats.dtype).T
        return StepOutput(logits, batch["labels"], kd)

    def head_modules(self) -> list[str]:
        return ["head"]

    def checkpoint_name(self, name: str) -> str:
        return name.removeprefix(PREFIX)

    def loaded(self, module: torch.nn.Module) -> LoadedModel:
        """The classifier as `load_model` gives it back from a saved folder, so `clip-classifier`
        (its own head) and `clip-zeroshot` (text prompts) both evaluate it."""
        live = module if isinstance(module, ClipClassifier) else getattr(module, "clip", module)
        return LoadedModel(
            live,
            "open_clip",
            self.spec,
            self.path,
            tokenizer=self.tokenizer,
            preprocess=self.preprocess,
            extra={"labels": list(self.labels)},
        )

    def save(self, module: torch.nn.Module, out: Path) -> None:
        from mergekit_sg.io.sidefiles import write_open_clip_config

        state = {k: v.detach().contiguous().cpu() for k, v in module.clip.state_dict().items()}
        save_file(state, out / "open_clip_model.safetensors", metadata={"format": "pt"})
        config = _config_of(self.path)
        if config is not None:
            shutil.copyfile(config, out / config.name)
        else:
            write_open_clip_config(out, self.arch)
        head = {"head.weight": module.head.weight.detach().contiguous().cpu()}
        save_file(head, out / HEAD_WEIGHTS, metadata={"format": "pt"})
        meta = {"labels": self.labels, "templates": self.templates, "normalize_features": True}
        (out / HEAD_META).write_text(json.dumps(meta, indent=2) + "\n")


def _config_of(path: Path) -> Path | None:
    """open_clip_config.json beside a pretrained checkpoint, if there is one."""
    cfg = path / "open_clip_config.json"
    return cfg if path.is_dir() and cfg.exists() else None
