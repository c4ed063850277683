"""Model cards (README.md with YAML front matter the Hub understands) for merged models, with
the evidence for the chosen alpha (a scan or LMC table and plot) when there is some."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mergekit_sg.errors import SgMergeError

RECIPE_FILE = "sgmerge_recipe.yaml"
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

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


def read_card(folder: Path | None) -> tuple[dict[str, Any], str | None]:
    """A folder's README.md: its YAML front matter ({} when none) and its `# title`."""
    if folder is None or not (folder / "README.md").is_file():
        return {}, None
    try:
        text = (folder / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}, None
    meta: dict[str, Any] = {}
    body = text
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            try:
                loaded = yaml.safe_load(text[3:end])
            except yaml.YAMLError:
                loaded = None
            meta = loaded if isinstance(loaded, dict) else {}
            body = text[end + 4 :]
    title = next((ln[2:].strip() for ln in body.splitlines() if ln.startswith("# ")), None)
    return meta, title


def library_for(folder: Path, kind: str | None) -> str | None:
    """`sentence-transformers` when the folder has modules.json (SentenceTransformer loads
    it), else the checkpoint kind's library."""
    if (folder / "modules.json").is_file():
        return "sentence-transformers"
    return {"open_clip": "open_clip", "transformers": "transformers"}.get(kind or "")


def as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def model_name(folder: Path | None, hub_id: str | None, ref: str) -> str:
    """How a card names a model: its Hub id, its own card's title, else the reference."""
    if hub_id:
        return hub_id
    _, title = read_card(folder)
    return title or ref


def recipe_text(
    command: str, out: str | Path, options: dict[str, Any], inputs: dict[str, str] | None = None
) -> str:
    """The recipe (`sgmerge run` reads it) that reproduces a plain CLI run: the command, its
    inputs, the output and the options that differ from their defaults."""
    doc: dict[str, Any] = {"command": command}
    if inputs:
        doc["inputs"] = {k: str(v) for k, v in inputs.items()}
    doc["out"] = str(out)
    if options:
        doc["options"] = json.loads(json.dumps(options, default=str))
    return yaml.safe_dump(doc, sort_keys=False)


def render_card(meta: dict[str, Any], title: str, body_sections: list[tuple[str, str]]) -> str:
    """A README.md: YAML front matter, a title, then `## heading` sections."""
    fm = yaml.safe_dump(meta, sort_keys=False).strip()
    parts = [f"---\n{fm}\n---\n", f"# {title}\n"]
    for heading, text in body_sections:
        parts.append(f"## {heading}\n\n{text.strip()}\n")
    return "\n".join(parts)


def recipe_block(recipe: dict[str, Any]) -> str:
    return "```json\n" + json.dumps(recipe, indent=2) + "\n```"


@dataclass(frozen=True)
class Evidence:
    """A scan or LMC probe to show in a card, so a reader sees why this alpha: its rows (one
    dict per alpha or point, same keys) as a table, an optional PNG plot and a one-line note."""

    title: str
    rows: list[dict[str, Any]]
    plot: Path | None = None
    note: str | None = None
    columns: list[str] | None = None


@dataclass(frozen=True)
class CardExtras:
    """What a caller adds to every output of a command: the recipe file that made it (written
    next to the weights as sgmerge_recipe.yaml and quoted in the card), and evidence."""

    recipe_yaml: str | None = None
    recipe_source: str | None = None
    evidence: tuple[Evidence, ...] = ()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; columns default to the keys in first-seen order."""
    if not rows:
        raise SgMergeError("evidence table has no rows")
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "evidence"


def evidence_section(ev: Evidence, dest: Path) -> tuple[str, str]:
    """(heading, markdown) for a card; the plot is copied next to the card, linked relatively."""
    parts = [ev.note.strip()] if ev.note else []
    parts.append(markdown_table(ev.rows, ev.columns))
    if ev.plot is not None:
        plot = Path(ev.plot)
        if not plot.is_file():
            raise SgMergeError(f"{plot}: evidence plot not found")
        with open(plot, "rb") as f:
            if f.read(8) != PNG_MAGIC:
                raise SgMergeError(f"{plot}: evidence plot is not a PNG file")
        name = f"{_slug(ev.title)}.png"
        n = 2
        while (dest / name).exists() and (dest / name).read_bytes() != plot.read_bytes():
            name = f"{_slug(ev.title)}_{n}.png"
            n += 1
        shutil.copyfile(plot, dest / name)
        parts.append(f"![{ev.title}]({name})")
    return ev.title, "\n\n".join(parts)


def recipe_file_section(extras: CardExtras) -> tuple[str, str] | None:
    """The recipe file that made this output, quoted in the card."""
    if not extras.recipe_yaml:
        return None
    made = f"Made by `sgmerge run {extras.recipe_source}`" if extras.recipe_source else "Made"
    text = (
        f"{made} from this recipe, saved next to the weights as `{RECIPE_FILE}`:\n\n"
        f"```yaml\n{extras.recipe_yaml.strip()}\n```"
    )
    return "Recipe file", text


def add_evidence(dest: Path, evidence: list[Evidence]) -> Path:
    """Add evidence sections to the README.md card in `dest` (before `## Sources` if present)."""
    card = dest / "README.md"
    if not card.is_file():
        raise SgMergeError(f"{card}: no model card to add evidence to")
    text = card.read_text()
    block = "".join(
        f"## {h}\n\n{b.strip()}\n\n" for h, b in (evidence_section(e, dest) for e in evidence)
    )
    at = text.find("\n## Sources\n")
    text = text.rstrip("\n") + "\n\n" + block if at < 0 else text[: at + 1] + block + text[at + 1 :]
    card.write_text(text.rstrip("\n") + "\n")
    return card


def card_problems(meta: dict[str, Any]) -> list[str]:
    """What the Hub would reject or misread in a card's metadata, checked locally (no network)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problems = []
    bases = meta.get("base_model")
    base_list = [bases] if isinstance(bases, str) else bases
    if bases is not None and not (
        isinstance(base_list, list) and all(isinstance(b, str) for b in base_list)
    ):
        problems.append("base_model must be a repo id or a list of repo ids")
    for b in base_list if isinstance(base_list, list) else []:
        try:
            validate_repo_id(b)
        except HFValidationError as e:
            problems.append(f"base_model {b!r} is not a Hub repo id ({e})")
    rel = meta.get("base_model_relation")
    if rel is not None and (rel not in BASE_MODEL_RELATIONS or not bases):
        allowed = ", ".join(BASE_MODEL_RELATIONS)
        problems.append(f"base_model_relation {rel!r} needs base_model and one of {allowed}")
    for key in ("library_name", "pipeline_tag", "license"):
        v = meta.get(key)
        if v is not None and not (isinstance(v, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v)):
            problems.append(f"{key} {v!r} must be a lowercase identifier")
    tags = meta.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        problems.append("tags must be a list of strings")
    return problems


def check_card(path: Path) -> dict[str, Any]:
    """Parse a README.md with huggingface_hub's ModelCard and check its metadata; the metadata."""
    from huggingface_hub import ModelCard

    try:
        meta = ModelCard.load(path).data.to_dict()
    except Exception as e:  # huggingface_hub raises ValueError or yaml errors for bad cards
        raise SgMergeError(
            f"{path}: model card does not parse ({str(e).splitlines()[0]})"
        ) from None
    problems = card_problems(meta)
    if problems:
        raise SgMergeError(f"{path}: model card metadata: {problems[0]}")
    return meta
