"""Pushing an output folder to the Hugging Face Hub: the repo is created if needed (private on
request) and every file that differs from the repo's copy at the branch goes up in one commit;
files already there byte for byte (same git blob id, or same LFS sha256) are not sent again, and
a push with nothing changed makes no commit. The token is huggingface_hub's own (HF_TOKEN or
the saved login): this module never reads, prints or stores it, and its errors never quote it.
Downloads are the other way round, in io/reference.py."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.atomic import TMP_TAG
from mergekit_sg.io.card import check_card
from mergekit_sg.io.reference import (
    hub_http_error,
    quiet_unless_terminal,
    transport_errors,
    unreachable,
)
from mergekit_sg.version import TOOLKIT

# Folder entries that are never uploaded: VCS and cache folders, our temporaries.
SKIPPED_NAMES = {".git", ".cache", "__pycache__", ".DS_Store", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class UploadFile:
    """One file of a push: where it goes in the repo, where it is here, and its size."""

    path_in_repo: str
    local: Path
    size: int


class PushOptions(BaseModel):
    """`sgmerge push FOLDER REPO_ID` options (the CLI flags and the `push` recipe's keys)."""

    model_config = ConfigDict(extra="forbid")

    revision: str = Field(default="main", description="Branch to commit to.")
    commit_message: str | None = Field(default=None, description="Commit title.")
    private: bool = Field(default=False, description="Create the repo as private if it is new.")
    dry_run: bool = Field(default=False, description="List what would be uploaded; send nothing.")


@dataclass
class PushResult:
    """What a push did (or, for a dry run, would do): `files` is the whole folder, `unchanged`
    the paths whose bytes were already on the branch (not sent again)."""

    repo_id: str
    revision: str
    files: list[UploadFile]
    dry_run: bool = False
    commit_url: str | None = None
    commit_oid: str | None = None
    private: bool | None = None
    warnings: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sent(self) -> list[UploadFile]:
        """The files this push uploaded (all of them for a dry run)."""
        same = set(self.unchanged)
        return [f for f in self.files if f.path_in_repo not in same]

    @property
    def sent_bytes(self) -> int:
        return sum(f.size for f in self.sent)


def check_repo_id(repo_id: str) -> str:
    """A repo id the Hub accepts (`org/name` or `name`), checked locally."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise SgMergeError(f"{repo_id!r} is not a Hub repo id (org/name): {e}") from None
    return repo_id


def require_token() -> None:
    """Fail before any work when no token is in the usual places (HF_TOKEN, the saved login)."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise SgMergeError(
            "not logged in to the Hub: set HF_TOKEN to a token with write access, "
            "or run `hf auth login`"
        )


def preflight(repo_id: str) -> None:
    """The checks a push needs, run before a long merge so it does not fail at the end."""
    check_repo_id(repo_id)
    require_token()


def _skipped(rel: Path) -> bool:
    return any(p in SKIPPED_NAMES or TMP_TAG in p for p in rel.parts)


def plan_upload(folder: str | Path) -> list[UploadFile]:
    """Every file under `folder` that a push uploads, in path order."""
    root = Path(folder)
    if not root.is_dir():
        raise SgMergeError(f"{root}: not a directory (push uploads an output folder)")
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not _skipped(rel):
            files.append(UploadFile(rel.as_posix(), p, p.stat().st_size))
    if not files:
        raise SgMergeError(f"{root}: nothing to push (the folder has no files)")
    return files


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str = "main",
    commit_message: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
) -> PushResult:
    """Upload `folder` to the model repo `repo_id` in one commit, creating the repo if needed.

    A dry run lists the files and sizes and makes no network call. The card (README.md), if
    any, is checked locally first so a bad card does not fail after the upload."""
    check_repo_id(repo_id)
    files = plan_upload(folder)
    card = Path(folder) / "README.md"
    if card.is_file():
        check_card(card)
    result = PushResult(repo_id, revision, files, dry_run=dry_run, private=private or None)
    if dry_run:
        return result
    require_token()
    message = commit_message or f"Upload {Path(folder).resolve().name} ({TOOLKIT})"
    try:
        with quiet_unless_terminal():
            _push(result, message, endpoint)
    except SgMergeError:
        raise
    except transport_errors() as e:
        raise SgMergeError(f"push to {repo_id}: {unreachable(e)}") from None
    except Exception as e:
        raise SgMergeError(f"push to {repo_id}: {_push_error(e)}") from None
    return result


def _push(result: PushResult, message: str, endpoint: str | None) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint)
    url = api.create_repo(result.repo_id, private=bool(result.private), exist_ok=True)
    result.repo_id = url.repo_id or result.repo_id
    if result.private:
        info = api.model_info(result.repo_id)
        if not info.private:
            msg = f"{result.repo_id} exists and is public; --private only applies to new repos"
            result.warnings.append(msg)
            warnings.warn(msg, stacklevel=3)
    if result.revision != "main":
        api.create_branch(result.repo_id, branch=result.revision, exist_ok=True)
    remote = _remote_files(api, result.repo_id, result.revision)
    ops = []
    for f in result.files:
        op = CommitOperationAdd(f.path_in_repo, str(f.local))
        if same_as_remote(f, op.upload_info.sha256.hex(), remote.get(f.path_in_repo)):
            result.unchanged.append(f.path_in_repo)
        else:
            ops.append(op)
    if not ops:  # everything is already there: no empty commit; point at the branch's head
        head = api.repo_info(result.repo_id, revision=result.revision).sha
        result.commit_oid = head
        result.commit_url = f"{api.endpoint}/{result.repo_id}/commit/{head}"
        return
    info = api.create_commit(result.repo_id, ops, commit_message=message, revision=result.revision)
    result.commit_url, result.commit_oid = info.commit_url, info.oid


@dataclass(frozen=True)
class RemoteFile:
    """A file on the branch as the Hub lists it: git blob id, size, LFS sha256 if stored in LFS."""

    blob_id: str
    size: int
    lfs_sha256: str | None = None


def _remote_files(api: object, repo_id: str, revision: str) -> dict[str, RemoteFile]:
    """Every file on `revision` of the repo (path -> RemoteFile), from the Hub's tree listing."""
    from huggingface_hub.hf_api import RepoFile

    out = {}
    for entry in api.list_repo_tree(repo_id, revision=revision, recursive=True):  # type: ignore[attr-defined]
        if isinstance(entry, RepoFile):
            sha = entry.lfs.sha256 if entry.lfs is not None else None
            out[entry.path] = RemoteFile(entry.blob_id, entry.size, sha)
    return out


def git_blob_id(path: Path, chunk: int = 1 << 20) -> str:
    """The git object id of a file's bytes, sha1(b"blob SIZE\\0" + bytes): what the Hub
    reports as a regular (non-LFS) file's oid."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def same_as_remote(local: UploadFile, sha256: str, remote: RemoteFile | None) -> bool:
    """Whether the local file's bytes are the remote's: an LFS file by its sha256, a regular
    one by its git blob id (sizes compared first, so a changed size costs no hashing)."""
    if remote is None or remote.size != local.size:
        return False
    if remote.lfs_sha256 is not None:
        return remote.lfs_sha256 == sha256
    return remote.blob_id == git_blob_id(local.local)


def _push_error(e: Exception) -> str:
    """One line for a failed push: what the Hub said and what to do."""
    from huggingface_hub import errors as hf_errors

    if isinstance(e, hf_errors.RevisionNotFoundError):
        return "the branch to push to does not exist and could not be created"
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        return (
            "the repo was not found after creating it: the token may lack write access "
            "to this namespace"
        )
    if isinstance(e, hf_errors.HfHubHTTPError):
        return hub_http_error(e)
    if isinstance(e, ValueError):  # e.g. the Hub rejected README.md metadata
        return " ".join(str(e).split())
    raise e
