"""A TIES or DARE merge's statistics computed ahead, while Python imports torch.

A TIES merge needs, per tensor and fine-tune, the exact set of the density * n largest
|theta_i - theta_base| (the magnitude top set: its threshold v, the count of kept elements
equal to v and where they end, the cut); a DARE merge with rescale needs, per tensor and
fine-tune, the sums sum |tau_i| and sum |tau_i| * keep_i over its seeded Bernoulli draw (and
keeps the drawn mask as bits for the chunk kernel). Either statistics pass reads every input
once more and costs about as much CPU as the merge's own chunk kernel; on 2 cores it runs
beside the chunk compute and sets the pace of the merge. The one stretch where a core waits
is the start: the interpreter imports torch (1.5-3 s) on one core. These statistics need no
torch (the safetensors headers, the inputs mapped from the page cache, the C kernels and
numpy: `methods/tops.py`, `methods/draws.py`), so `sgmerge merge CONFIG` starts this pass
from `cli/early.py` before torch is imported.

What it computes is a pure function of the bytes: the top set of the c largest of
|x - base|, or the DARE sums of a draw's key and threshold, for a base tensor and an input
tensor (each named by the file's identity, the tensor's byte offset and length, and its
dtype). The merge's statistics step asks for each key it needs and takes the result where
this pass has it (or waits for one in flight); anything else it computes itself as before,
and this pass then skips it. A config this pass reads differently from the merge (per-tensor
rules, gradients, another slot numbering) at worst computes results nobody asks for; a result
is never used for another key. Best effort throughout: any failure here leaves the statistics
to the merge."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import stat
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mergekit_sg.merge.methods import native
from mergekit_sg.merge.methods.draws import dare_key, dare_threshold, keep_bits
from mergekit_sg.merge.methods.select import BRACKET_MIN, TopSet

# (st_dev, st_ino, size, mtime_ns) of the file, the tensor's absolute byte offset and length,
# and its kernel dtype code: where a tensor's bytes are, as both sides can name it
Loc = tuple[int, int, int, int, int, int, int]
# ("top", base, input, n, c): the top set of the c largest |input - base| of n elements;
# ("dare", base, input, n, key, t): DARE's (sum |d|, sum |d| * keep, keep bits or None)
Key = tuple[Any, ...]

CODES = {"F32": native.DT_F32, "BF16": native.DT_BF16}  # safetensors dtype -> kernel code
MAX_HEADER = 100 << 20  # a safetensors header larger than this is not read here
# The interpreter's switch interval while this pass runs: each kernel call gives the GIL up
# and takes it back, and the import on the main thread holds it for up to the interval
# (5 ms by default) each time. Sets done by the end of a 3.3 s torch import at 1.1B: ~100
# of 312 at 5 ms, ~130 at 0.5 ms, ~150 at 0.1 ms, the import no slower.
SWITCH_INTERVAL = 1e-4


class _Registry:
    """The sets computed ahead, the ones in flight, and the keys the merge took over."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[Key, Any] = {}
        self.flight: dict[Key, threading.Event] = {}
        self.skip: set[Key] = set()
        self.hits = 0  # sets the merge took from here (tests and benchmarks read it)
        self.active = 0  # passes running: only then does a key asked for need remembering
        self.asked = False  # whether a merge has asked for a result since the pass began

    def begin(self) -> None:
        with self.lock:
            if not self.active:  # sets of an earlier pass nobody took: stale now
                self.done.clear()
                self.asked = False
            self.active += 1

    def end(self) -> None:
        with self.lock:
            self.active -= 1
            if not self.active:
                self.skip.clear()

    def claim(self, key: Key) -> bool:
        """Whether this pass should compute `key` (nobody has it, nobody asked for it yet)."""
        with self.lock:
            if key in self.done or key in self.flight or key in self.skip:
                return False
            self.flight[key] = threading.Event()
            return True

    def publish(self, key: Key, value: Any) -> None:
        with self.lock:
            self.done[key] = value
            ev = self.flight.pop(key, None)
        if ev is not None:
            ev.set()

    def take(self, key: Key) -> tuple[bool, Any]:
        """(True, the result) where this pass computed it (waiting for one in flight); else
        (False, None), and this pass will not compute it."""
        with self.lock:
            self.asked = True
            ev = self.flight.get(key)
            if ev is None and key not in self.done:
                if self.active:
                    self.skip.add(key)
                return False, None
        if ev is not None:
            ev.wait()
        with self.lock:
            if key not in self.done:  # abandoned (the pass failed): the merge computes it
                return False, None
            self.hits += 1
            return True, self.done.pop(key)

    def abandon(self, keys: list[Key]) -> None:
        """Release keys this pass claimed but will not compute."""
        with self.lock:
            evs = [self.flight.pop(k) for k in keys if k in self.flight]
        for ev in evs:
            ev.set()


REGISTRY = _Registry()


def file_id(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def take_top(base: Loc, x: Loc, n: int, c: int) -> tuple[bool, TopSet | None]:
    """The merge's question: the top set of the c largest of |x - base| (n elements), if this
    pass has it (see `_Registry.take`)."""
    return REGISTRY.take(("top", base, x, n, c))


def take_dare(
    base: Loc, x: Loc, n: int, key: int, t: int
) -> tuple[bool, tuple[float, float, np.ndarray | None] | None]:
    """The merge's question: DARE's (sum |x - base|, the same over the elements kept by the
    draw of `key` and threshold `t`, the keep bits or None), if this pass has it."""
    return REGISTRY.take(("dare", base, x, n, key, t))


@dataclass(frozen=True)
class Stored:
    """One tensor of a safetensors file as this pass sees it."""

    loc: Loc
    numel: int
    path: Path


def read_header(path: Path) -> tuple[dict[str, Any], int, os.stat_result]:
    """The header of a safetensors file, where its data begins, and the file's stat."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO named *.safetensors: no wait
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: not a regular file")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER or 8 + n > st.st_size:
            raise ValueError(f"{path}: not a safetensors header")
        header = json.loads(f.read(n))
    return header, 8 + n, st


def stored_tensors(files: list[Path]) -> dict[str, Stored]:
    """The float32 and bfloat16 tensors of a checkpoint's safetensors files, by name."""
    out: dict[str, Stored] = {}
    for path in files:
        header, data, st = read_header(path)
        fid = file_id(st)
        for name, meta in header.items():
            if name == "__metadata__" or meta.get("dtype") not in CODES:
                continue
            begin, end = meta["data_offsets"]
            numel = int(np.prod(meta["shape"], dtype=np.int64))
            loc = (*fid, data + begin, end - begin, CODES[meta["dtype"]])
            out[name] = Stored(loc, numel, path)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Job:
    """One tensor's statistics: the base tensor, and per input its tensor and the keys of
    the results this pass can file for it."""

    name: str
    n: int
    base: Stored
    inputs: list[tuple[Stored, list[Key]]]


def _jobs(
    base: list[Path], models: list[tuple[list[Path], Any]], keys: Callable[..., list[Key]]
) -> list[Job]:
    """A job per float tensor large enough for the bracket select (smaller ones cost the merge
    nothing), present with its shape in the base and an input, in the base's file order;
    keys(name, n, base, input, model) -> that input's keys (none: the input is left out)."""
    b = stored_tensors(base)
    ins = [(stored_tensors(files), m) for files, m in models]
    jobs = []
    for name, st in sorted(b.items(), key=lambda kv: (str(kv[1].path), kv[1].loc[4])):
        if st.numel < BRACKET_MIN:
            continue
        inputs = [
            (tensors[name], ks)
            for tensors, m in ins
            if name in tensors and tensors[name].numel == st.numel
            if (ks := keys(name, st.numel, st, tensors[name], m))
        ]
        if inputs:
            jobs.append(Job(name, st.numel, st, inputs))
    return jobs


def ties_jobs(base: list[Path], models: list[tuple[list[Path], float]]) -> list[Job]:
    """The sets a TIES merge of `models` (each its files and its density) onto `base` asks
    for, per input whose density is under 1; the count of an input is max(1, int(density *
    n)), as the merge's own statistics step has it."""

    def keys(name: str, n: int, b: Stored, x: Stored, d: float) -> list[Key]:
        return [("top", b.loc, x.loc, n, max(1, int(d * n)))] if 0.0 < d < 1.0 else []

    return _jobs(base, models, keys)


def dare_jobs(
    base: list[Path], models: list[tuple[list[Path], tuple[int, float]]], seed: int
) -> list[Job]:
    """The sums a DARE merge with rescale asks for: `models` are each input's files and its
    (slot, density), the slot as the merge numbers it (1.. in config order, the base left
    out), which names the draw with the seed and the tensor's name (`draws.dare_key`)."""

    def keys(name: str, n: int, b: Stored, x: Stored, m: tuple[int, float]) -> list[Key]:
        slot, d = m
        if not 0.0 < d < 1.0:
            return []
        return [("dare", b.loc, x.loc, n, dare_key(seed, name, slot), dare_threshold(d))]

    return _jobs(base, models, keys)


class _Maps:
    """Read-only mappings of the files this pass reads: each the very file its header came
    from (the same identity, or the pass stops), so a set is never filed under bytes other
    than those it was computed from."""

    def __init__(self) -> None:
        self.maps: dict[Path, mmap.mmap] = {}

    def view(self, s: Stored) -> tuple[np.ndarray, int]:
        mm = self.maps.get(s.path)
        if mm is None:
            with open(s.path, "rb") as f:
                if file_id(os.fstat(f.fileno())) != s.loc[:4]:  # replaced since its header
                    raise ValueError(f"{s.path} changed while being read")
                mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            self.maps[s.path] = mm
        _, _, _, _, offset, nbytes, code = s.loc
        return np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=offset), code

    def close_file(self, path: Path) -> None:
        """Unmap a file no later job reads: the process's resident set stays about a shard
        of each checkpoint, not the checkpoints (the page cache keeps the data)."""
        mm = self.maps.pop(path, None)
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()

    def close(self) -> None:
        for path in list(self.maps):
            self.close_file(path)


Compute = Callable[[Any, Job, dict[int, list[Key]]], list[Any]]


def top_sets(scan: Callable[..., Any]) -> Compute:
    """A job's top sets (`scan`: methods.tops.scan_tops): the claimed counts of every input
    in one pass over the base and the inputs."""

    def compute(maps: Any, job: Job, claimed: dict[int, list[Key]]) -> list[Any]:
        base = maps.view(job.base)
        xs = {j + 1: maps.view(job.inputs[j][0]) for j in claimed}
        sizes = {j + 1: [k[4] for k in ks] for j, ks in claimed.items()}
        tops = scan(native.lib(), base, xs, job.n, sizes, None)
        return [top for j in claimed for top in tops[j + 1]]

    return compute


class Handover(Exception):
    """Raised by a job's compute to end the pass: the merge computes the rest itself."""


def dare_sums(maps: Any, job: Job, claimed: dict[int, list[Key]]) -> list[Any]:
    """A job's DARE sums, every claimed input in one call over the whole tensors (the call the
    merge makes for mapped inputs: the same sums to the bit), with the keep bits where
    `draws.keep_bits` has room. Where it has none: before the merge has begun (torch still
    importing, a core idle) the sums alone (the chunk kernel then draws the masks again);
    once the merge asks, the pass ends (`Handover`): the merge's statistics run a bounded
    number of tensors ahead of its chunks, so the bits they draw fit the budget as the merged
    tensors' bits are freed, where this pass, unbounded, would take the budget from them."""
    lib = native.lib()
    b, bc = maps.view(job.base)
    ks = [k for j in claimed for k in claimed[j]]
    xs = [maps.view(job.inputs[j][0]) for j in claimed]
    bits = [keep_bits((job.n + 7) // 8) for _ in ks]
    if REGISTRY.asked and any(a is None for a in bits):
        raise Handover
    m = len(ks)
    sums = np.zeros(2 * m, np.float64)
    lib.gta_dare_sums_n(
        b.ctypes.data,
        bc,
        (ctypes.c_void_p * m)(*[x.ctypes.data for x, _ in xs]),
        (ctypes.c_int32 * m)(*[c for _, c in xs]),
        (ctypes.c_uint64 * m)(*[k[4] for k in ks]),
        (ctypes.c_uint64 * m)(*[k[5] for k in ks]),
        m,
        job.n,
        0,
        sums.ctypes.data,
        (ctypes.c_void_p * m)(*[None if a is None else a.ctypes.data for a in bits]),
    )
    return [(float(sums[2 * i]), float(sums[2 * i + 1]), bits[i]) for i in range(m)]


def run_jobs(jobs: list[Job], compute: Compute) -> None:
    """Compute the results of `jobs` in order, each key claimed first, published when done;
    a failure, or a `Handover`, abandons what is left."""
    maps = _Maps()
    claimed: list[Key] = []
    REGISTRY.begin()
    try:
        last_use = {
            st.path: j
            for j, job in enumerate(jobs)
            for st in [job.base, *(x for x, _ in job.inputs)]
        }
        for j, job in enumerate(jobs):
            mine = {
                slot: got
                for slot, (_, ks) in enumerate(job.inputs)
                if (got := [k for k in ks if REGISTRY.claim(k)])
            }
            for ks in mine.values():
                claimed += ks
            if mine:
                values = compute(maps, job, mine)
                for k, v in zip([k for ks in mine.values() for k in ks], values, strict=True):
                    REGISTRY.publish(k, v)
            for path in [p for p, last in last_use.items() if last == j]:
                maps.close_file(path)
    except Handover:
        pass
    finally:
        REGISTRY.abandon(claimed)
        REGISTRY.end()
        maps.close()


def _start(jobs: Callable[[], list[Job]], compute: Callable[[], Compute]) -> threading.Thread:
    """Run `jobs()` with `compute()` in a background thread, at SWITCH_INTERVAL."""

    def work() -> None:
        old = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            with contextlib.suppress(Exception):
                if native.lib() is not None:
                    run_jobs(jobs(), compute())
        finally:
            if sys.getswitchinterval() == SWITCH_INTERVAL:  # nobody else changed it meanwhile
                sys.setswitchinterval(old)

    t = threading.Thread(target=work, name="sgmerge-early-stats", daemon=True)
    t.start()
    return t


def start_ties(base: list[Path], models: list[tuple[list[Path], float]]) -> threading.Thread:
    """Begin the top sets of a TIES merge of `models` (each its safetensors files and its
    density) onto `base` in a background thread: the headers read, the C kernels loaded
    (built on a first use), then `run_jobs`. Best effort: any failure leaves the sets to the
    merge."""

    def compute() -> Compute:
        from mergekit_sg.merge.methods.tops import scan_tops

        return top_sets(scan_tops)

    return _start(lambda: ties_jobs(base, models), compute)


def start_dare(
    base: list[Path], models: list[tuple[list[Path], tuple[int, float]]], seed: int
) -> threading.Thread:
    """Begin the rescale sums of a DARE merge (`dare_jobs`) in a background thread, as
    `start_ties` does."""
    return _start(lambda: dare_jobs(base, models, seed), lambda: dare_sums)
