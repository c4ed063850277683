"""LoRA through peft, merged back on save: the saved model is a plain checkpoint with the
original names and shapes, W + (lora_alpha / r) * B @ A for every adapted layer, so it
interpolates like any other (and interpolating it at alpha is scaling the LoRA delta by alpha)."""

from __future__ import annotations

import re

import torch

from mergekit_sg.errors import SgMergeError

# Short names users write, and what each architecture calls them (first match wins).
ALIASES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "query", "q"),
    "k": ("k_proj", "key", "k"),
    "v": ("v_proj", "value", "v"),
    "o": ("o_proj", "attention.output.dense", "out_proj", "o"),
}
ADAPTER = "default"
_LORA_KEY = re.compile(r"\.lora_[A-Za-z_]+\.")


def resolve_targets(module: torch.nn.Module, targets: list[str]) -> list[str]:
    """Module-name suffixes of the Linear layers to adapt, from q,k,v,o or literal suffixes."""
    linear = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    out = []
    for t in targets:
        for cand in ALIASES.get(t, (t,)):
            if any(n == cand or n.endswith("." + cand) for n in linear):
                out.append(cand)
                break
        else:
            raise SgMergeError(
                f"--lora-targets {t!r}: no Linear layer of {type(module).__name__} is named so "
                f"(e.g. {', '.join(sorted({n.rsplit('.', 1)[-1] for n in linear})[:8])})"
            )
    return out


def add_lora(
    module: torch.nn.Module,
    rank: int,
    targets: list[str],
    alpha: float | None = None,
    dropout: float = 0.0,
    train_modules: list[str] | None = None,
) -> torch.nn.Module:
    """Wrap `module` in a peft LoRA model; only the adapters (and `train_modules`, trained in
    full, e.g. a classification head) require gradients. Returns the PeftModel."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SgMergeError("--lora-rank needs peft: pip install 'mergekit-sg[lora]'") from None
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=resolve_targets(module, targets),
        modules_to_save=train_modules or None,
        bias="none",
    )
    return get_peft_model(module, config)


def merged_state_dict(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's state dict with every LoRA delta merged in, without changing the live
    model: the same names, shapes and values as `merge_and_unload().state_dict()`."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if _LORA_KEY.search(key) or ".original_module." in key:
            continue
        plain = key.replace(".base_layer.", ".").replace(f".modules_to_save.{ADAPTER}.", ".")
        out[plain] = value.detach()
    with torch.no_grad():
        for name, layer in base.named_modules():
            if isinstance(layer, LoraLayer) and ADAPTER in layer.lora_A:
                w = layer.get_base_layer().weight
                out[f"{name}.weight"] = w + layer.get_delta_weight(ADAPTER).to(w.dtype)
    return out


def merge_back(peft_model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with the adapters merged in (peft's merge_and_unload; in place)."""
    return peft_model.merge_and_unload()
