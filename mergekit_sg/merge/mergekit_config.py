"""mergekit YAML configs as they are, parsed into our merge spec: `merge_method`, `models` with
per-model `parameters`, `base_model`, global `parameters`, `dtype` / `out_dtype`, per-tensor
filter lists and layer gradients, `model@revision` references and Hub ids.

A parameter setting is a number, a list of numbers (a gradient: interpolated linearly over
t = layer / (layers - 1) of the tensor's layer, t = 0 for tensors outside the layers, as
mergekit), or a list of {filter, value} conditions (first whose `filter` is a substring of the
tensor name, or has no filter / '*', wins). A model's setting overrides the global one.
Features we do not support are refused with one line naming the key."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergekit_sg.errors import SgMergeError

Setting = Any  # float | bool | str | list[float] | list[{filter, value}]

UNSUPPORTED = {
    "slices": "slices (layer stacking) are not supported; use `models`",
    "tokenizer_source": "tokenizer_source is not supported (the tokenizer is copied as is)",
    "tokenizer": "tokenizer merging is not supported",
    "experts": "mergekit-moe configs are not supported",
    "gate_mode": "mergekit-moe configs are not supported",
    "modules": "multi-module configs are not supported",
    "chat_template": "chat_template is not supported",
}
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|resblocks)\.(\d+)\.")


class ModelEntry(BaseModel):
    """One input: a path, a Hub id or `id@revision`, and its parameters."""

    model_config = ConfigDict(extra="forbid")
    model: str
    parameters: dict[str, Setting] = {}


class MergeSpec(BaseModel):
    """What to merge: the method, its inputs and parameters (mergekit's config keys)."""

    model_config = ConfigDict(extra="forbid")
    merge_method: str
    models: list[ModelEntry] = Field(default=[], min_length=0)
    base_model: str | None = None
    parameters: dict[str, Setting] = {}
    dtype: str | None = None
    out_dtype: str | None = None
    seed: int = Field(default=0, description="Seed of the random methods (dare_*), recorded.")


def _model_entry(item: Any) -> Any:
    if isinstance(item, str):
        return {"model": item}
    if isinstance(item, dict) and isinstance(item.get("model"), dict):
        inner = item["model"]  # mergekit's {model: {model: {path: ...}}} long form
        path = inner.get("model", {}).get("path") if isinstance(inner.get("model"), dict) else None
        if path is None or inner.get("lora"):
            raise SgMergeError("models.model: only plain model references are supported (no LoRA)")
        return {**item, "model": path}
    return item


def _is_file(path: Path) -> bool:
    """path.is_file(), False for text too long to be a file name (one-line YAML)."""
    try:
        return path.is_file()
    except OSError:
        return False


def parse_config(config: str | Path | dict[str, Any]) -> MergeSpec:
    """A mergekit config (a YAML file, YAML text or a dict) as a MergeSpec; one line on error."""
    if isinstance(config, dict):
        raw = dict(config)
    else:
        path = None if isinstance(config, str) and "\n" in config else Path(config)
        if path is None:  # YAML text
            text = str(config)
        elif _is_file(path):
            text = path.read_text()
        elif isinstance(config, Path) or path.suffix in (".yml", ".yaml"):
            # a file name, not YAML text: say so rather than parse the name as a YAML scalar
            why = "is not a file" if path.exists() else "no such file"
            raise SgMergeError(f"config: {config}: {why}")
        else:
            text = str(config)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SgMergeError(f"config: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise SgMergeError("config: expected a mapping with merge_method and models")
    for key, why in UNSUPPORTED.items():
        if key in raw:
            raise SgMergeError(f"{key}: {why}")
    raw.pop("name", None)
    if "models" in raw and isinstance(raw["models"], list):
        raw["models"] = [_model_entry(m) for m in raw["models"]]
    try:
        return MergeSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SgMergeError(f"{loc or 'config'}: {err['msg']}") from None


def layer_t(name: str, num_layers: int) -> float:
    """mergekit's t of a tensor: layer / (layers - 1) inside the layer stack, else 0."""
    m = _LAYER.search(name)
    if m is None or num_layers <= 1:
        return 0.0 if m is None else 1.0
    return int(m.group(1)) / (num_layers - 1)


def num_layers(names: list[str]) -> int:
    idx = [int(m.group(1)) for n in names if (m := _LAYER.search(n))]
    return max(idx) + 1 if idx else 0


def evaluate(setting: Setting, name: str, t: float) -> Any:
    """A setting's value for one tensor (see the module doc); None when no condition matches."""
    if isinstance(setting, dict) and "value" in setting:
        setting = [setting]
    if isinstance(setting, (bool, str, int, float)) or setting is None:
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting):
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        if all(isinstance(v, (bool, str, int, float)) for v in setting):
            return setting[int(t * (len(setting) - 1))]
        for cond in setting:
            if not isinstance(cond, dict) or "value" not in cond:
                raise SgMergeError(f"parameters: cannot read the setting {setting!r}")
            flt = cond.get("filter")
            if flt is None or flt == "*" or flt in name:
                return evaluate(cond["value"], name, t)
        return None
    raise SgMergeError(f"parameters: cannot read the setting {setting!r}")


def resolve(key: str, scopes: list[dict[str, Setting]], name: str, t: float) -> tuple[bool, Any]:
    """(found, value) of parameter `key` for tensor `name`: the first scope that sets it."""
    for scope in scopes:
        if key in scope:
            v = evaluate(scope[key], name, t)
            if v is not None:
                if isinstance(v, float) and not math.isfinite(v):
                    raise SgMergeError(f"{key}: must be finite for {name}, got {v}")
                return True, v
    return False, None
