"""Where a merged model came from: sources with revisions and file hashes, and the recipe,
recorded in the safetensors metadata and the model card."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from mergekit_sg.io.card import (
    CardExtras,
    as_list,
    evidence_section,
    front_matter,
    library_for,
    model_name,
    pipeline_for,
    read_card,
    recipe_block,
    recipe_file_section,
    render_card,
)
from mergekit_sg.io.checkpoint import Checkpoint
from mergekit_sg.version import TOOLKIT

PLACEHOLDER_SHA = "0" * 64
TAGS = ["merge", "mergekit-sg", "wise-ft"]


def source_record(ck: Checkpoint, hashes: dict[str, str] | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"ref": ck.ref, "format": ck.format}
    if ck.source.hub_id:
        rec.update(hub_id=ck.source.hub_id, revision=ck.source.revision, commit=ck.source.commit)
        if ck.source.hub_path:
            rec["hub_path"] = ck.source.hub_path
    rec["sha256"] = (
        hashes
        if hashes is not None
        else {str(p.relative_to(ck.root)): PLACEHOLDER_SHA for p in ck.files}
    )
    return rec


class HashJob:
    """Hash the sources' files in a background thread while the merge runs."""

    def __init__(self, checkpoints: dict[str, Checkpoint]) -> None:
        self.result: dict[str, dict[str, str]] = {}
        self._error: BaseException | None = None
        self._cks = checkpoints
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            for role, ck in self._cks.items():
                self.result[role] = ck.file_hashes()
        except BaseException as exc:
            self._error = exc

    def wait(self) -> dict[str, dict[str, str]]:
        self._t.join()
        if self._error is not None:
            raise self._error
        return self.result


def _license(ck: Checkpoint) -> str | None:
    side = ck.side_dir
    if side is None or not (side / "README.md").exists():
        return None
    try:
        from huggingface_hub import ModelCard

        lic = ModelCard.load(side / "README.md").data.to_dict().get("license")
    except Exception:
        return None
    return lic if isinstance(lic, str) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def write_card(
    dest: Path,
    recipe: dict[str, Any],
    pre: Checkpoint,
    ft: Checkpoint,
    command: str | None,
    extras: CardExtras | None = None,
) -> None:
    """README.md for a merged model: Hub front matter, the method, the evidence for the alpha
    (scan or LMC table and plot, when given), the sources, the recipe file and the recipe."""
    config = None
    if (dest / "config.json").exists():
        config = json.loads((dest / "config.json").read_text())
    library = library_for(dest, ft.kind)
    cards = {c.ref: read_card(c.side_dir)[0] for c in (pre, ft)}
    bases: list[str] = []
    for c in (pre, ft):  # each input's Hub id, else what its own card names as its base
        bases += [c.source.hub_id] if c.source.hub_id else as_list(cards[c.ref].get("base_model"))
    inherited = {
        k: cards[ft.ref].get(k) or cards[pre.ref].get(k) for k in ("license", "pipeline_tag")
    }
    meta = front_matter(
        list(dict.fromkeys(b for b in bases if b)),
        library,
        TAGS,
        license=_license(ft) or _license(pre) or _str(inherited["license"]),
        pipeline_tag=_str(inherited["pipeline_tag"]) or pipeline_for(config),
    )
    alpha = recipe["alpha"]
    rules = []
    for item in recipe.get("alpha_for", []):
        rules.append(f"- `--alpha-for {item}`")
    for item in recipe.get("exclude", []):
        rules.append(f"- `--exclude {item}` (copied from the {recipe['excluded_from']} model)")
    for item in recipe.get("only", []):
        rules.append(f"- `--only {item}`")
    method = (
        f"WiSE-FT weight-space interpolation, `theta = (1 - alpha) * theta_pretrained + "
        f"alpha * theta_finetuned`, with **alpha = {alpha:g}** (0 is the pretrained model, 1 the "
        f"fine-tuned one), computed in {recipe['compute_dtype']} and rounded once to the output "
        "dtype.\n\n" + ("\n".join(rules) if rules else "The same alpha for every tensor.")
    )
    src_lines = ["| role | reference | revision | file | sha256 |", "|---|---|---|---|---|"]
    for role in ("pretrained", "finetuned"):
        s = recipe["sources"][role]
        for f, h in s["sha256"].items():
            src_lines.append(f"| {role} | `{s['ref']}` | {s.get('commit') or '-'} | {f} | `{h}` |")
    extras = extras or CardExtras()
    sections = [("Method", method)]
    sections += [evidence_section(ev, dest) for ev in extras.evidence]
    sections.append(("Sources", "\n".join(src_lines)))
    if command:
        sections.append(("Reproduce", f"```\n{command}\n```"))
    if (recipe_file := recipe_file_section(extras)) is not None:
        sections.append(recipe_file)
    sections.append(("Recipe", f"Made with {TOOLKIT}.\n\n{recipe_block(recipe)}"))
    names = [model_name(c.side_dir, c.source.hub_id, c.ref) for c in (pre, ft)]
    title = f"WiSE-FT merge (alpha={alpha:g}) of {names[0]} and {names[1]}"
    (dest / "README.md").write_text(render_card(meta, title, sections))
