"""A training task: the live model built from a spec and a pretrained checkpoint, its data
encoded into features, batching, the forward pass (logits and targets), the loss, the outputs
distillation compares, and saving in the layout that `load_model` and `interpolate` read.
The families live in `text` and `clip_image`; `build` picks one from a model spec."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mergekit_sg.models.adapters import LoadedModel

IGNORE = -100


@dataclass
class StepOutput:
    """One forward pass: logits, targets (IGNORE where not scored), the distillation logits
    and which of their positions count."""

    logits: torch.Tensor
    targets: torch.Tensor
    kd_logits: torch.Tensor
    kd_mask: torch.Tensor | None = None


class Task(ABC):
    """What the training loop and the Fisher estimator need from a model family."""

    kind: str  # LoadedModel.kind of the live model, for the evaluators
    spec: str
    path: Path
    module: torch.nn.Module
    labels: list[str]
    features: list[Any]
    default_lr = 5e-5
    default_weight_decay = 0.01
    default_lora_targets = ("q", "v")

    @abstractmethod
    def collate(self, features: list[Any], device: torch.device) -> dict[str, torch.Tensor]:
        """A batch of tensors on `device` from encoded examples."""

    @abstractmethod
    def forward(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Run `module` (the live model, or a frozen teacher of the same family) on a batch."""

    @abstractmethod
    def save(self, module: torch.nn.Module, out: Path) -> None:
        """Write `module` (plain, no adapters) into the existing directory `out`."""

    @abstractmethod
    def head_modules(self) -> list[str]:
        """Names of the task-head submodules (trained in full under LoRA)."""

    def length(self, feature: Any) -> int:
        """Size of one encoded example, for batching similar lengths together."""
        return 1

    def is_head(self, name: str) -> bool:
        return any(name == h or name.startswith(h + ".") for h in self.head_modules())

    def checkpoint_name(self, name: str) -> str:
        """Live parameter name -> the name `save` writes it under."""
        return name

    def loss(self, out: StepOutput) -> torch.Tensor:
        """Mean cross-entropy over the scored targets."""
        logits = out.logits.float()
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), out.targets.reshape(-1), ignore_index=IGNORE
        )

    def loaded(self, module: torch.nn.Module) -> LoadedModel:
        """The live model as the evaluators see it."""
        return LoadedModel(module, self.kind, self.spec, self.path, tokenizer=self.tokenizer)

    tokenizer: Any = None
