"""Checkpoint references: a local directory or file, or a Hub id `org/name[@revision]` resolved
through huggingface_hub's cache, fetching only weights and side files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mergekit_sg.errors import SgMergeError

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")

SIDE_FILE_PATTERNS = [
    "*.json",
    "tokenizer*",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.jinja",
    "1_Pooling/*",
]
WEIGHT_PATTERNS = {
    "safetensors": ["*.safetensors", "*.safetensors.index.json"],
    "bin": ["*.bin", "*.bin.index.json", "*.pt", "*.pth"],
}


@dataclass(frozen=True)
class Resolved:
    """Where a reference lives on disk, and what the user called it."""

    ref: str
    path: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None


def resolve(ref: str, cache_dir: str | None = None) -> Resolved:
    """A reference as a local path; Hub ids are downloaded (or found in the cache when offline)."""
    path = Path(ref).expanduser()
    if path.exists():
        return Resolved(ref=ref, path=path)
    m = HUB_ID.match(ref)
    if m is None or ref.startswith((".", "/", "~")):
        raise SgMergeError(f"{ref}: no such file or directory (and not a Hub id org/name[@rev])")
    return _from_hub(ref, m.group("repo"), m.group("rev"), cache_dir)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _from_hub(ref: str, repo: str, rev: str | None, cache_dir: str | None) -> Resolved:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub import errors as hf_errors

    try:
        if _offline():
            patterns = SIDE_FILE_PATTERNS + WEIGHT_PATTERNS["safetensors"] + WEIGHT_PATTERNS["bin"]
            commit = None
        else:
            info = HfApi().model_info(repo, revision=rev, files_metadata=False)
            files = [s.rfilename for s in info.siblings or []]
            kind = "safetensors" if any(f.endswith(".safetensors") for f in files) else "bin"
            patterns = SIDE_FILE_PATTERNS + WEIGHT_PATTERNS[kind]
            commit = info.sha
        local = snapshot_download(
            repo, revision=commit or rev, allow_patterns=patterns, cache_dir=cache_dir
        )
    except hf_errors.GatedRepoError:
        raise SgMergeError(
            f"{ref}: the Hub repo is gated; accept its terms on the Hub and log in (HF_TOKEN)"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise SgMergeError(
            f"{ref}: no such model repo on the Hub (or it is private and you are not logged in)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise SgMergeError(f"{ref}: revision {rev!r} not found in {repo}") from None
    except hf_errors.LocalEntryNotFoundError:
        raise SgMergeError(
            f"{ref}: not in the local Hub cache and the Hub is offline "
            "(HF_HUB_OFFLINE is set or no network); download it first"
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as e:
        raise SgMergeError(
            f"{ref}: could not fetch from the Hub ({str(e).splitlines()[0]})"
        ) from None
    local_path = Path(local)
    return Resolved(
        ref=ref, path=local_path, hub_id=repo, revision=rev, commit=commit or local_path.name
    )
