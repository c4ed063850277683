"""Model cards (README.md with YAML front matter the Hub understands) for merged models."""

from __future__ import annotations

import json
from typing import Any

import yaml

PIPELINE_BY_ARCH = {
    "CausalLM": "text-generation",
    "SequenceClassification": "text-classification",
    "MaskedLM": "fill-mask",
}


def front_matter(
    base_models: list[str],
    library: str | None,
    tags: list[str],
    license: str | None = None,
    pipeline_tag: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if base_models:
        meta["base_model"] = base_models
        meta["base_model_relation"] = "merge"
    if library:
        meta["library_name"] = library
    if pipeline_tag:
        meta["pipeline_tag"] = pipeline_tag
    if license:
        meta["license"] = license
    meta["tags"] = tags
    return meta


def pipeline_for(config: dict[str, Any] | None) -> str | None:
    for arch in (config or {}).get("architectures") or []:
        for suffix, tag in PIPELINE_BY_ARCH.items():
            if arch.endswith(suffix):
                return tag
    return None


def render_card(meta: dict[str, Any], title: str, body_sections: list[tuple[str, str]]) -> str:
    """A README.md: YAML front matter, a title, then `## heading` sections."""
    fm = yaml.safe_dump(meta, sort_keys=False).strip()
    parts = [f"---\n{fm}\n---\n", f"# {title}\n"]
    for heading, text in body_sections:
        parts.append(f"## {heading}\n\n{text.strip()}\n")
    return "\n".join(parts)


def recipe_block(recipe: dict[str, Any]) -> str:
    return "```json\n" + json.dumps(recipe, indent=2) + "\n```"
