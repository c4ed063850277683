"""Atomic output directories: everything is written into a temporary directory beside the
destination and renamed into place only when complete, so a crash or kill leaves the
destination absent or complete, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mergekit_sg.errors import SgMergeError

TMP_TAG = ".sgmerge-tmp-"


def check_destination(dest: Path, force: bool) -> None:
    """Refuse an existing destination without --force, before any work is done."""
    if dest.exists() and not force:
        raise SgMergeError(f"{dest}: already exists; pass --force to replace it")
    if not dest.parent.exists():
        raise SgMergeError(f"{dest.parent}: parent directory does not exist")


def _clean_stale(dest: Path) -> None:
    """Remove temporaries left by killed runs (their pid is no longer alive)."""
    for p in dest.parent.glob(f".{dest.name}{TMP_TAG}*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """SIGTERM raises SystemExit so the temporary directory is removed like on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def atomic_directory(dest: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `dest` when the block succeeds."""
    dest = Path(dest)
    check_destination(dest, force)
    _clean_stale(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{TMP_TAG}{os.getpid()}-", dir=dest.parent))
    try:
        with _terminate_as_exception():
            yield tmp
            _publish(tmp, dest, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, dest: Path, force: bool) -> None:
    os.chmod(tmp, 0o755)
    if dest.exists() or dest.is_symlink():
        if not force:
            raise SgMergeError(f"{dest}: appeared while writing; pass --force to replace it")
        old = dest.parent / f".{dest.name}{TMP_TAG}{os.getpid()}-old"
        os.replace(dest, old) if not dest.is_dir() else dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        tmp.rename(dest)
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
