"""Atomic output directories: everything is written into a temporary directory beside the
destination and renamed into place only when complete, so a crash or kill leaves the
destination absent or complete, never half-written.

- Before the rename every file of the output is fsynced, then every folder of it; after the
  rename the parent folder is fsynced, so a power cut leaves the old state or the new one.
- `--force` swaps the new folder and the old destination with one `renameat2(RENAME_EXCHANGE)`
  where the file system has it (Linux ext4, xfs, btrfs, tmpfs, ...): there is no moment without
  either the old or the new output. Elsewhere it falls back to two renames.
- Temporary folders are named `.DEST.sgmerge-tmp-PID-XXXX`; those of dead runs (a SIGKILL,
  a power cut) beside the destination are removed by the next run writing into that folder.
- Destinations that cannot be replaced (`.`, a mount point, a file system root), a parent that
  is not a writable folder, a name too long: refused before any work, in one line."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mergekit_sg.errors import SgMergeError, Terminated

TMP_TAG = ".sgmerge-tmp-"
_NAME_IN_TMP = 80  # characters of the destination's name kept in the temporary folder's name
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def check_destination(dest: Path, force: bool) -> None:
    """Refuse, before any work is done, a destination that exists (without --force) or that
    cannot be replaced by a rename, and a parent that is not a folder."""
    dest = Path(dest)
    if dest.name in ("", ".", "..") or dest.resolve() == Path(dest.resolve().anchor):
        raise SgMergeError(
            f"{dest}: cannot be the destination (name a new folder, e.g. {Path(dest, 'merged')})"
        )
    if len(os.fsencode(dest.name)) > 255:
        raise SgMergeError(f"{dest.name[:40]}...: file name longer than 255 bytes")
    if dest.exists() and not force:
        raise SgMergeError(f"{dest}: already exists; pass --force to replace it")
    if dest.is_dir() and not dest.is_symlink() and os.path.ismount(dest):
        raise SgMergeError(f"{dest}: is a mount point and cannot be replaced; name a folder in it")
    parent = dest.parent
    if not parent.exists():
        raise SgMergeError(f"{parent}: parent directory does not exist")
    if not parent.is_dir():
        raise SgMergeError(f"{parent}: is not a directory")


def _pid_of(tmp_name: str) -> int | None:
    """The pid in `.DEST.sgmerge-tmp-PID-XXXX` (None if the name is not one of ours)."""
    head, tag, rest = tmp_name.rpartition(TMP_TAG)
    if not tag or not head.startswith("."):
        return None
    pid, sep, _ = rest.partition("-")  # no "-": not PID-named (e.g. another writer's mkstemp)
    return int(pid) if sep and pid.isdigit() else None


def clean_stale(folder: Path) -> list[Path]:
    """Remove temporaries of dead runs in `folder` (their pid is gone); the removed paths."""
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if TMP_TAG in p.name]
    except OSError:
        return removed
    for p in candidates:
        pid = _pid_of(p.name)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(p)
        except (PermissionError, OverflowError):  # alive under another user; or not a pid
            continue
    return removed


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """SIGTERM raises Terminated so the temporary directory is removed like on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _make_tmp(dest: Path) -> Path:
    prefix = f".{dest.name[:_NAME_IN_TMP]}{TMP_TAG}{os.getpid()}-"
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    except OSError as e:
        why = e.strerror or str(e)
        raise SgMergeError(
            f"{dest.parent}: cannot create the temporary output folder there ({why})"
        ) from None


@contextlib.contextmanager
def atomic_directory(dest: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `dest` when the block succeeds."""
    dest = Path(dest)
    check_destination(dest, force)
    clean_stale(dest.parent)
    tmp = _make_tmp(dest)
    try:
        with _terminate_as_exception():
            yield tmp
            _publish(tmp, dest, force)
    except OSError as e:  # disk full, read-only, an input gone: one line, nothing left
        shutil.rmtree(tmp, ignore_errors=True)
        raise SgMergeError(os_error_line(e, tmp, dest)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(dest: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside `dest` (`.DEST.sgmerge-tmp-PID-XXXX`) that replaces
    `dest` when the block succeeds: written, made readable (0666 less the umask), fsynced,
    renamed over `dest`, the folder fsynced. On any error or a SIGTERM the temporary is
    removed and `dest` is left as it was; a killed run's temporary is removed by the next."""
    dest = Path(dest)
    check_destination(dest, force)
    clean_stale(dest.parent)
    prefix = f".{dest.name[:_NAME_IN_TMP]}{TMP_TAG}{os.getpid()}-"
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=dest.parent)
    except OSError as e:
        raise SgMergeError(
            f"{dest.parent}: cannot create a temporary file there ({e.strerror or e})"
        ) from None
    os.close(fd)
    tmp = Path(name)
    try:
        with _terminate_as_exception():
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if dest.exists() and not force:
                raise SgMergeError(f"{dest}: appeared while writing; pass --force to replace it")
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SgMergeError(os_error_line(e, tmp, dest)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def os_error_line(e: OSError, tmp: Path, dest: Path) -> str:
    """'FILE: what went wrong', with the temporary folder's name shown as the destination's."""
    name = str(e.filename or dest).replace(str(tmp), str(dest))
    return f"{name}: {e.strerror or e}"


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder, deepest first, `root` last."""
    dirs = []
    for here, subdirs, files in os.walk(root):
        for name in files:
            p = os.path.join(here, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dirs.append(here)
        del subdirs  # walked by os.walk itself
    for d in reversed(dirs):
        _fsync_dir(Path(d))


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_renameat2():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one atomic step; False where the system or file system cannot."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (os.umask would
    set it for a moment, racing other threads that create files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _readable_files(tmp: Path) -> None:
    """Files some writers create private (safetensors writes 0600) get the mode a plain
    `open(..., "w")` gives, 0666 less the umask (0644 usually), like the rest of the output."""
    mode = 0o666 & ~_umask()
    for p in tmp.rglob("*"):
        if p.is_file() and not p.is_symlink() and (p.stat().st_mode & 0o777) != mode:
            os.chmod(p, mode)


def _publish(tmp: Path, dest: Path, force: bool) -> None:
    os.chmod(tmp, 0o755)
    _readable_files(tmp)
    fsync_tree(tmp)
    try:
        if dest.exists() or dest.is_symlink():
            if not force:
                raise SgMergeError(f"{dest}: appeared while writing; pass --force to replace it")
            if exchange(tmp, dest):  # tmp now holds the old output: a stale temp if we die here
                _remove(tmp)
            else:
                old = dest.parent / f".{dest.name[:_NAME_IN_TMP]}{TMP_TAG}{os.getpid()}-old"
                os.replace(dest, old) if not dest.is_dir() else dest.rename(old)
                tmp.rename(dest)
                _remove(old)
        else:
            tmp.rename(dest)
    except OSError as e:
        raise SgMergeError(f"{dest}: cannot put the output in place ({e.strerror or e})") from None
    _fsync_dir(dest.parent)
