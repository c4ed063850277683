"""SHA-256 of checkpoint files for provenance, cached by (path, size, mtime, inode) so a file is
hashed once; Hub cache blobs are named by their SHA-256 already and are never re-read.

`fd_sha256` hashes through a descriptor the reader already holds (pread, so the reader's own
reads are not disturbed): the hash is of the very bytes the data was read from, even if the
path is renamed over or deleted meanwhile. `hash_ahead` starts hashing files in a thread of
its own (a command's start, cli/early.py); a digest is made once per file and process, a file
another thread is hashing waited for, and one made early serves only a descriptor of the same
file (path, size, mtime and inode: the cache's key)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")
_lock = threading.Lock()


def cache_file() -> Path:
    root = os.environ.get("MERGEKIT_SG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mergekit-sg"
    )
    return Path(root) / "sha256.json"


def _stat_key(path: Path) -> str:
    return _fd_key(path, path.stat())


def _hub_blob(real: Path) -> bool:
    """A file of the Hub cache's blobs/, named by its SHA-256."""
    return bool(_SHA.match(real.name)) and "blobs" in real.parts


def _load_cache() -> dict[str, str]:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _store(key: str, digest: str) -> None:
    path = cache_file()
    with _lock:
        data = _load_cache()
        data[key] = digest
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sha256-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time


def fd_sha256(fd: int, path: Path) -> str:
    """The SHA-256 (hex) of the open file `fd` (opened from `path`), read with pread."""
    real = path.resolve()
    st = os.fstat(fd)
    if _hub_blob(real):
        with contextlib.suppress(OSError):
            named = os.stat(real)
            if (named.st_ino, named.st_dev) == (st.st_ino, st.st_dev):
                return real.name
    return _once(_fd_key(real, st), lambda: _digest(fd))  # type: ignore[return-value]


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), from the Hub blob name or the cache when possible."""
    real = path.resolve()
    if _hub_blob(real):
        return real.name
    return _once(_stat_key(real), lambda: _digest_path(real))  # type: ignore[return-value]


def hash_ahead(paths: Sequence[Path]) -> threading.Thread:
    """Hash `paths` into the cache in a background thread, the last first, skipping any a
    thread is hashing already and any that cannot be read (the merge's own hashing reports
    those). For a command's start: the interpreter imports torch on one core for 1.5-3 s, and
    the other core can hash the sources meanwhile. The merge's hashing goes front to back, so
    the two meet in the middle rather than one trailing the other file by file; a file one
    thread is hashing, the other waits for instead of hashing it twice."""

    def run() -> None:
        for p in reversed(paths):
            with contextlib.suppress(OSError):
                real = p.resolve()
                if _hub_blob(real):
                    continue  # named by its hash
                # not blocking: a FIFO under a weight file's name must not hang the thread
                flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
                fd = os.open(real, flags)
                try:  # the key of the file read, whatever the path names meanwhile
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode):  # the command refuses anything else itself
                        _once(_fd_key(real, st), lambda fd=fd: _digest(fd), wait=False)
                finally:
                    os.close(fd)

    t = threading.Thread(target=run, name="sgmerge-hash-ahead", daemon=True)
    t.start()
    return t


# digests made by this process (also where the cache file cannot be written), and the keys
# some thread is hashing now
_memo: dict[str, str] = {}
_in_flight: dict[str, threading.Event] = {}
_flight_lock = threading.Lock()


def _once(key: str, compute: Callable[[], str], wait: bool = True) -> str | None:
    """The digest of `key`: from this process or the cache, else compute() (then stored).
    A key another thread is computing is waited for (`wait`, the digest it found returned)
    or skipped (None), never computed twice at once."""
    while True:
        digest = _memo.get(key) or _load_cache().get(key)
        if digest:
            return digest
        with _flight_lock:
            done = _in_flight.get(key)
            if done is None:
                done = _in_flight[key] = threading.Event()
                break
        if not wait:
            return None
        done.wait()  # then from the memo, or (that thread failed) computed here
    try:
        digest = compute()
        _memo[key] = digest
        _store(key, digest)
        return digest
    finally:
        with _flight_lock:
            del _in_flight[key]
        done.set()


CHUNK = 8 << 20  # bytes a read: hashlib and preadv let go of the GIL for each


def _digest(fd: int) -> str:
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos = 0
    while n := os.preadv(fd, [buf], pos):
        h.update(view[:n])
        pos += n
    return h.hexdigest()


def _digest_path(path: Path) -> str:
    with open(path, "rb") as f:
        return _digest(f.fileno())


def _fd_key(real: Path, st: os.stat_result) -> str:
    """The cache key of an open file (as _stat_key's of its path)."""
    return f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
