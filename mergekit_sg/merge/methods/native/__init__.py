"""Fused C kernels of the task-vector methods and SLERP, built once per machine at first use.

The torch code in `task_arithmetic.py` and `geometric.py` is the reference and the fallback:
TIES runs ~25 elementwise passes per element, each a trip through memory; `kernels.c` does
the same float32 operations in the same order in one pass over 512-element blocks that stay
in L1 (the bytes are the same, tested; only float64 sums are added in another order). It is
compiled with the system C compiler (`$CC`, else `cc`) into the user cache
(`$XDG_CACHE_HOME/mergekit-sg/native`, keyed by the source, the compiler and the CPU, since
it is built for this CPU) and loaded with ctypes: no build step at install, no Python
headers. No compiler, a failed build or `MERGEKIT_SG_NATIVE=0` leaves the torch code in
charge (`available()` is False; `reason()` says why)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels.c")
# IEEE float32 as written: no FMA contraction, no fast-math. -fno-trapping-math only says that
# floating-point exceptions are never trapped (they are not: nothing enables them), which lets
# the compiler if-convert the compares of fused loops and vectorise them (TIES' chunk kernel
# 4.2 -> 2.7 ns an element, measured); no value changes (the bytes are tested).
FLAGS = [
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fPIC",
    "-shared",
]
MAX_INPUTS = 32  # MAXIN in kernels.c
DT_F32, DT_BF16 = 0, 1
M_NONE, M_TOP, M_OUTLIERS, M_DARE = 0, 1, 2, 3
K_THRESH, K_ALL, K_NONE = 0, 1, 2

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_why: str | None = None
_tried = False


class GtaInput(ctypes.Structure):
    """gta_input in kernels.c: one task input's chunk and how it is sparsified and weighted."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("mode", ctypes.c_int32),
        ("keep_kind", ctypes.c_int32),
        ("drop_kind", ctypes.c_int32),
        ("keep_v", ctypes.c_float),
        ("drop_v", ctypes.c_float),
        ("keep_cut", ctypes.c_int64),
        ("drop_cut", ctypes.c_int64),
        ("dare_key", ctypes.c_uint64),
        ("dare_t", ctypes.c_uint64),
        ("scale", ctypes.c_float),
        ("weight", ctypes.c_float),
        ("has_scale", ctypes.c_int32),
        ("has_weight", ctypes.c_int32),
        ("bits", ctypes.c_void_p),
    ]


class GtaScan(ctypes.Structure):
    """gta_scan in kernels.c: one input's bracket (lo, hi), its candidate buffers (idx int32
    when idx32, else int64) and, out, the counts below, above and in the bracket."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("idx32", ctypes.c_int32),
        ("lo", ctypes.c_float),
        ("hi", ctypes.c_float),
        ("vals", ctypes.c_void_p),
        ("idx", ctypes.c_void_p),
        ("cap", ctypes.c_int64),
        ("below", ctypes.c_int64),
        ("above", ctypes.c_int64),
        ("found", ctypes.c_int64),
    ]


def _cpu_id() -> str:
    """What -march=native depends on: the machine and the CPU's model and flags."""
    ident = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                ident += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return ident


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "mergekit-sg" / "native"


def _build(cc: str, target: Path) -> None:
    """Compile into a temporary file beside the target and rename: concurrent first uses
    each build their own and the last rename wins, never a half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
    os.close(fd)
    try:
        subprocess.run(
            [cc, *FLAGS, str(SOURCE), "-o", tmp],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    p, i32, i64, u64, f32 = (
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_int64,
        ctypes.c_uint64,
        ctypes.c_float,
    )
    lib.gta_combine.restype = i32
    lib.gta_combine.argtypes = [
        p, i32, p, i32, i32, i32, i32, f32, f32, i32, p, p, i64, i64, p, i32, p,
    ]  # fmt: skip
    lib.gta_absdiff.restype = None
    lib.gta_absdiff.argtypes = [p, i32, p, i32, i64, p]
    lib.gta_bracket.restype = i64
    lib.gta_absdiff_strided_n.restype = None
    lib.gta_absdiff_strided_n.argtypes = [p, i32, p, p, i32, i64, i64, p]
    lib.gta_absdiff_bracket_n.restype = None
    lib.gta_absdiff_bracket_n.argtypes = [p, i32, p, i32, i64]
    lib.gta_ranks.restype = i32
    lib.gta_ranks.argtypes = [p, i64, p, i32, p]
    lib.gta_nth_equal.restype = i64
    lib.gta_nth_equal.argtypes = [p, p, i32, i64, f32, i64]
    lib.gta_bracket.argtypes = [p, i64, f32, f32, p, p, i64, p]
    lib.gta_dare_sums_n.restype = None
    lib.gta_dare_sums_n.argtypes = [p, i32, p, p, p, p, i32, i64, i64, p, p]
    lib.gta_dare_mask.restype = None
    lib.gta_dare_mask.argtypes = [i64, i64, u64, u64, p]
    lib.gta_kth.restype = i32
    lib.gta_kth.argtypes = [p, i64, i64, p, p, p]
    lib.geo_dots.restype = None
    lib.geo_dots.argtypes = [p, i32, p, i32, i64, p]
    lib.geo_lin2.restype = None
    lib.geo_lin2.argtypes = [p, i32, p, i32, f32, f32, i64, p, i32]


def lib() -> ctypes.CDLL | None:
    """The loaded kernels, building them on first use; None where they cannot be had."""
    global _lib, _why, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        try:
            _lib = _load()
        except Exception as e:  # any failure: the torch code runs instead
            _lib, _why = None, f"{type(e).__name__}: {e}"
        _tried = True
        return _lib


def _load() -> ctypes.CDLL | None:
    global _why
    if os.environ.get("MERGEKIT_SG_NATIVE", "1") == "0":
        _why = "disabled by MERGEKIT_SG_NATIVE=0"
        return None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        _why = "no C compiler (cc) found"
        return None
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join([cc, *FLAGS]).encode() + _cpu_id().encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"kernels-{key}.so"
    if not target.exists():
        try:
            _build(cc, target)
        except (OSError, subprocess.SubprocessError):
            target = Path(tempfile.mkdtemp(prefix="mergekit-sg-native-")) / f"kernels-{key}.so"
            _build(cc, target)  # an unwritable cache: build in a temporary folder
    out = ctypes.CDLL(str(target))
    _declare(out)
    return out


def available() -> bool:
    return lib() is not None


def reason() -> str | None:
    """Why the kernels are not in use (None when they are)."""
    lib()
    return _why


def reset_for_tests(enabled: bool | None = None) -> None:
    """Forget the loaded state; `enabled=False` keeps the kernels off until the next reset."""
    global _lib, _why, _tried
    with _lock:
        _lib, _why, _tried = None, None, False
        if enabled is False:
            _why, _tried = "disabled for a test", True
