"""DARE's random draw, named without torch: the per-tensor keys, the keep threshold and the
budget of keep masks held as bits. Torch-free so that `merge/early_stats.py` can draw while
the interpreter imports torch; the merge's methods use the same functions, so both sides name
a draw the same way."""

from __future__ import annotations

import hashlib
import math
import threading
import weakref

import numpy as np


def tensor_seed(seed: int, name: str, block: int) -> int:
    """A 63-bit generator seed from (seed, tensor name, block): random draws do not depend on
    the chunking, the threads or the order tensors are visited in."""
    h = hashlib.blake2b(f"{seed}\0{name}\0{block}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def dare_key(seed: int, name: str, slot: int) -> int:
    """The draw's key of one input's task vector of one tensor."""
    return tensor_seed(seed, f"{name}#{slot}", 0)


def dare_threshold(density: float) -> int:
    """t = ceil(density * 2^24): a 24-bit draw r keeps its element when r < t, i.e. when
    r / 2^24 < density (exact: density * 2^24 is exact in a double)."""
    return math.ceil(density * (1 << 24))


# DARE's keep masks are drawn once, in the statistics pass, and kept as bits (numel / 8 bytes
# per input) for the chunk kernel, which then reads them instead of drawing them again (a
# quarter to a third of its work, measured). The statistics run tensors ahead of the merge,
# so the bits held at once are capped here; past the cap the chunk kernel draws the mask
# again (the same bits, in its block loops: ~2x its fused time). The cap is sized for the
# statistics computed while torch imports (`merge/early_stats.py`), which run far ahead of
# the merge: at 1.1B, ~120 of 312 input-tensors by the end of the import, ~100 MB of bits;
# at 64 MB a third of those went without (RESULTS.md run Y). Peak anonymous memory stays
# flat in model size: the cap plus what the merge holds without it.
BITS_BUDGET = 128 << 20
_lock = threading.Lock()
_held = 0


def _release(nbytes: int) -> None:
    global _held
    with _lock:
        _held -= nbytes


def bits_held() -> int:
    """Bytes of keep bits alive now (tests read it)."""
    with _lock:
        return _held


def keep_bits(nbytes: int) -> np.ndarray | None:
    """A buffer for one input's keep bits if the budget has room, else None; its bytes count
    against BITS_BUDGET until it is freed."""
    global _held
    with _lock:
        if _held + nbytes > BITS_BUDGET:
            return None
        _held += nbytes
    arr = np.empty(nbytes, np.uint8)
    weakref.finalize(arr, _release, nbytes)
    return arr
