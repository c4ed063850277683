"""Checkpoint references: a local directory or file, an installed package's model (`pkg:DIST`),
or a Hub repo `org/name[@revision]` (or one file in it, `hf://org/name[@revision]/path`)
resolved through huggingface_hub's cache, fetching only the files the checkpoint is read from."""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from mergekit_sg.errors import SgMergeError, first_few

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
HF_URI = re.compile(
    r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.+))?$"
)
PKG_PREFIX = "pkg:"

SIDE_FILE_PATTERNS = [
    "*.json",
    "tokenizer*",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.jinja",
    "1_Pooling/*",
    "README.md",
]
WEIGHT_PATTERNS = {
    "safetensors": ["*.safetensors", "*.safetensors.index.json"],
    "bin": ["*.bin", "*.bin.index.json", "*.pt", "*.pth"],
}
# The weight layouts of a Hub repo, in the order a directory is read (io/checkpoint.py).
HUB_LAYOUTS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class Resolved:
    """Where a reference lives on disk, and what the user called it."""

    ref: str
    path: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    hub_path: str | None = None


def resolve(ref: str, cache_dir: str | None = None) -> Resolved:
    """A reference as a local path; Hub refs are downloaded (or found in the cache when offline)."""
    try:
        path = Path(ref).expanduser()
    except RuntimeError:  # ~nouser: no such user's home
        user = ref[1:].split("/", 1)[0]
        raise SgMergeError(f"{ref}: no user {user!r} to expand ~{user} for") from None
    if path.exists():
        return Resolved(ref=ref, path=path)
    if ref.startswith(PKG_PREFIX):
        folder = package_path(ref)
        return Resolved(ref=ref, path=folder, hub_id=package_hub_id(folder))
    uri = HF_URI.match(ref)
    if uri is not None:
        rev = unquote(uri.group("rev")) if uri.group("rev") else None
        return _from_hub(ref, uri.group("repo"), rev, uri.group("path"), cache_dir)
    m = HUB_ID.match(ref)
    if m is None or ref.startswith((".", "/", "~")):
        raise SgMergeError(f"{ref}: no such file or directory (and not a Hub id org/name[@rev])")
    return _from_hub(ref, m.group("repo"), m.group("rev"), None, cache_dir)


def package_path(ref: str) -> Path:
    """`pkg:DIST[/sub/path]`: the model folder an installed pip distribution ships.

    Without a sub-path, the one folder of the distribution that holds weight files."""
    dist_name, _, sub = ref[len(PKG_PREFIX) :].partition("/")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise SgMergeError(
            f"{ref}: no installed package {dist_name!r}; pip install {dist_name}"
        ) from None
    files = [PurePosixPath(str(f)) for f in dist.files or [] if not str(f).startswith("..")]
    if sub:
        tops = sorted({f.parts[0] for f in files if not f.parts[0].endswith(".dist-info")})
        for top in tops:
            target = Path(str(dist.locate_file(f"{top}/{sub}")))
            if target.exists():
                return target
        raise SgMergeError(
            f"{ref}: no {sub!r} in package {dist_name} (top level: {', '.join(tops)})"
        )
    dirs = sorted({str(f.parent) for f in files if f.suffix in WEIGHT_SUFFIXES})
    if len(dirs) != 1:
        found = f"several folders ({', '.join(dirs)}); name one: {ref}/FOLDER" if dirs else "none"
        raise SgMergeError(f"{ref}: package {dist_name} ships weight files in {found}")
    return Path(str(dist.locate_file(dirs[0])))


# `SentenceTransformer('org/name')`, `AutoModel.from_pretrained("org/name")` in a card's usage
_LOADS_FROM = re.compile(
    r"""(?:SentenceTransformer|from_pretrained)\(\s*['"]([A-Za-z0-9][\w.-]*/[\w.-]+)['"]"""
)


def package_hub_id(folder: Path) -> str | None:
    """The Hub repo a packaged model (`pkg:DIST`) is a copy of, so cards keep it as
    `base_model`: the one repo id that the model's own card (README.md) loads in its usage
    code (`SentenceTransformer('org/name')`, `from_pretrained('org/name')`); None when the
    card names none, or several different ones."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return None
    ids = set(_LOADS_FROM.findall(text))
    if len(ids) != 1:
        return None
    (repo,) = ids
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return repo


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def select_hub_files(files: list[str]) -> list[str]:
    """The weight files a directory read of this repo would use, and nothing else.

    The first layout present wins (as in io/checkpoint.py); an index brings its shards."""
    names = set(files)
    for layout in HUB_LAYOUTS:
        if layout not in names:
            continue
        if not layout.endswith(".index.json"):
            return [layout]
        ext = layout.removesuffix(".index.json")
        stem, suffix = ext.rsplit(".", 1)
        shards = fnmatch.filter(files, f"{stem}-*-of-*.{suffix}") or fnmatch.filter(
            files, f"*.{suffix}"
        )
        return [layout, *shards]
    top = [f for f in files if "/" not in f]
    for suffix in WEIGHT_SUFFIXES:
        singles = [f for f in top if f.endswith(suffix)]
        if singles:
            return singles
    return []


def _ignored_side_files(weights: list[str]) -> list[str]:
    """The open_clip config is fetched only with open_clip weights, so the kind is read right."""
    return [] if any(w.startswith("open_clip_") for w in weights) else ["open_clip_config.json"]


def _from_hub(
    ref: str, repo: str, rev: str | None, hub_path: str | None, cache_dir: str | None
) -> Resolved:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub import errors as hf_errors

    try:
        if _offline():
            patterns = SIDE_FILE_PATTERNS + WEIGHT_PATTERNS["safetensors"] + WEIGHT_PATTERNS["bin"]
            ignore = None
        else:
            info = HfApi().model_info(repo, revision=rev, files_metadata=False)
            files = [s.rfilename for s in info.siblings or []]
            if hub_path is not None and hub_path not in files:
                weights = [f for f in files if f.endswith(WEIGHT_SUFFIXES)]
                raise SgMergeError(
                    f"{ref}: no file {hub_path!r} in {repo} at revision {rev or 'main'}"
                    + (f" (weight files there: {first_few(weights, 5)})" if weights else "")
                )
            weights = select_hub_files(files) if hub_path is None else [hub_path]
            if not weights:
                raise SgMergeError(
                    f"{ref}: no weight files in {repo} at revision {rev or 'main'} "
                    f"(files: {first_few(files, 5)})"
                )
            patterns = weights + SIDE_FILE_PATTERNS
            ignore = _ignored_side_files(weights)
        with quiet_unless_terminal():  # by revision name, so the cache maps it for offline use
            if hub_path is not None:
                local = hf_hub_download(repo, hub_path, revision=rev, cache_dir=cache_dir)
            else:
                local = snapshot_download(
                    repo,
                    revision=rev,
                    allow_patterns=patterns,
                    ignore_patterns=ignore,
                    cache_dir=cache_dir,
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
    except hf_errors.RemoteEntryNotFoundError:
        raise SgMergeError(
            f"{ref}: a file of {repo} at revision {rev or 'main'} is missing on the Hub"
        ) from None
    except hf_errors.LocalEntryNotFoundError:
        raise SgMergeError(
            f"{ref}: not in the local Hub cache and the Hub is offline "
            "(HF_HUB_OFFLINE is set or no network); download it first"
        ) from None
    except hf_errors.HfHubHTTPError as e:
        raise SgMergeError(f"{ref}: {hub_http_error(e)}") from None
    except transport_errors() as e:
        raise SgMergeError(f"{ref}: {unreachable(e)}") from None
    except OSError as e:
        raise SgMergeError(
            f"{ref}: could not fetch from the Hub ({str(e).splitlines()[0]})"
        ) from None
    local_path = Path(local)
    snapshot = local_path if hub_path is None else _snapshot_of(local_path, hub_path)
    return Resolved(
        ref=ref,
        path=local_path,
        hub_id=repo,
        revision=rev,
        commit=snapshot.name,  # the snapshot folder is named by the commit it holds
        hub_path=hub_path,
    )


@contextlib.contextmanager
def quiet_unless_terminal() -> Iterator[None]:
    """huggingface_hub's progress bars on a terminal only, so logs and CI stay quiet."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if sys.stderr.isatty() or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _snapshot_of(file: Path, hub_path: str) -> Path:
    """The snapshot folder (named by the commit) that a downloaded file lies in."""
    return file.parents[len(PurePosixPath(hub_path).parts) - 1]


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exception types the Hub client's HTTP library raises when the Hub cannot be reached."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def unreachable(e: BaseException) -> str:
    from huggingface_hub import constants

    return (
        f"could not reach the Hub at {constants.ENDPOINT} ({e}); check the network or "
        "HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the local cache"
    )


def hub_http_error(e: Exception) -> str:
    """One line for an HTTP error from the Hub: what happened and what to do. Never the token."""
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401:
        return (
            "the Hub refused the credentials (HTTP 401): the token from HF_TOKEN or the saved "
            "login is invalid or expired; set a valid HF_TOKEN or run `hf auth login`"
        )
    if status == 403:
        return (
            "the Hub refused access (HTTP 403): the token has no write access here; use a "
            "token with write permission for this namespace"
        )
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return f"the Hub answered with an error ({first})"
