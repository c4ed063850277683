"""Writing a run: the trained model, its JSONL log, its summary (and the recipe that ran it) into
one directory, atomically (built in a temporary directory beside OUT, renamed when complete);
and the resumable training state, replaced atomically at each save."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.io.atomic import atomic_directory
from mergekit_sg.io.card import (
    RECIPE_FILE,
    as_list,
    front_matter,
    library_for,
    read_card,
    render_card,
)
from mergekit_sg.tune.core.log import LOG_FILE, Record, write_json, write_jsonl
from mergekit_sg.version import TOOLKIT


def write_run(
    out: Path,
    save: Callable[[Path], object],
    log: list[Record],
    summary_file: str,
    summary: dict[str, Any],
    force: bool = False,
    recipe_yaml: str | None = None,
    place: Callable[[Path], object] | None = None,
) -> None:
    """`save(dir)` writes the model; then LOG_FILE, `summary_file`, the recipe, and
    `place(dir)` (a tracker moving its staged files into the output)."""
    with atomic_directory(out, force) as tmp:
        save(tmp)
        if place is not None:
            place(tmp)
        write_jsonl(tmp / LOG_FILE, log)
        write_json(tmp / summary_file, summary)
        if recipe_yaml:
            (tmp / RECIPE_FILE).write_text(recipe_yaml)


def write_trained_card(
    dest: Path,
    pretrained: Path,
    pretrained_ref: str,
    hub_id: str | None,
    what: str,
    tags: list[str],
) -> None:
    """README.md for a trained model (or the initial one): the pretrained model as its base
    (its Hub id, else what its own card calls its base), and the license, pipeline tag and
    language of the pretrained's card, so provenance survives finetune -> interpolate -> push;
    library_name is `sentence-transformers` when the folder has modules.json."""
    meta_in, title_in = read_card(pretrained)
    bases = [hub_id] if hub_id else as_list(meta_in.get("base_model"))
    meta = front_matter(
        bases,
        library_for(dest, "transformers"),
        tags,
        license=meta_in.get("license") if isinstance(meta_in.get("license"), str) else None,
        pipeline_tag=meta_in.get("pipeline_tag")
        if isinstance(meta_in.get("pipeline_tag"), str)
        else None,
    )
    if bases:
        meta["base_model_relation"] = "finetune"
    if isinstance(meta_in.get("language"), (str, list)):
        meta["language"] = meta_in["language"]
    name = hub_id or title_in or pretrained_ref
    body = [
        ("Model", f"{name} {what}. Made with {TOOLKIT}; the run's options are in `{RECIPE_FILE}`.")
    ]
    (dest / "README.md").write_text(render_card(meta, f"{name} {what}", body))


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy of a state dict on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def save_state(path: Path, blob: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename over it."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    """What `save_state` wrote (tensors only: weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)
