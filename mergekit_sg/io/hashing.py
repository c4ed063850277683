"""SHA-256 of checkpoint files for provenance, cached by (path, size, mtime, inode) so a file is
hashed once; Hub cache blobs are named by their SHA-256 already and are never re-read.

`fd_sha256` hashes through a descriptor the reader already holds (pread, so the reader's own
reads are not disturbed): the hash is of the very bytes the data was read from, even if the
path is renamed over or deleted meanwhile."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")
_lock = threading.Lock()


def cache_file() -> Path:
    root = os.environ.get("MERGEKIT_SG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mergekit-sg"
    )
    return Path(root) / "sha256.json"


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


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
    if _SHA.match(real.name) and "blobs" in real.parts:
        with contextlib.suppress(OSError):
            named = os.stat(real)
            if (named.st_ino, named.st_dev) == (st.st_ino, st.st_dev):
                return real.name
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cached = _load_cache().get(key)
    if cached:
        return cached
    h = hashlib.sha256()
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    pos = 0
    while n := os.preadv(fd, [buf], pos):
        h.update(view[:n])
        pos += n
    digest = h.hexdigest()
    _store(key, digest)
    return digest


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), from the Hub blob name or the cache when possible."""
    real = path.resolve()
    if _SHA.match(real.name) and "blobs" in real.parts:
        return real.name
    key = _stat_key(real)
    cached = _load_cache().get(key)
    if cached:
        return cached
    h = hashlib.sha256()
    with open(real, "rb") as f:
        buf = bytearray(8 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    digest = h.hexdigest()
    _store(key, digest)
    return digest
