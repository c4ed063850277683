"""The streaming executor, the one every merge method runs through: a reader thread fills
reusable buffers with aligned chunks of the N inputs in file order, the caller's thread
computes every output of a chunk with the plan's method (after the method's statistics step,
once per tensor, where it has one), a writer thread puts bytes at their final offsets. Memory
is a few fixed chunk buffers whatever the model size; inputs are read once for all outputs.
On CUDA the buffers are pinned, each chunk goes to the GPU and back with non-blocking
copies, and the reader and writer threads keep the disk busy meanwhile."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mergekit_sg.device import resolve_device
from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.dtypes import itemsize
from mergekit_sg.io.pages import aligned_empty, dma_empty
from mergekit_sg.io.progress import NullProgress, Progress
from mergekit_sg.io.safetensors_write import (
    PLACED_ALIGN,
    StreamingWriter,
    placed_start,
)
from mergekit_sg.merge.methods import ChunkCtx, Params, native
from mergekit_sg.merge.plan import MergePlan, PlanEntry

CHUNK_ELEMS = 1 << 22  # 4M elements: the unit other streaming passes (inspect) use
CHUNK_BYTES = 8 << 20  # bytes per buffer at the widest dtype of the plan: 4M bfloat16
IN_BUFFERS = 2  # per input side: one being read, one being computed on
OUT_BUFFERS = 4  # the page cache, not these, absorbs the disk's pace
# On the CPU, output buffers for this many chunks of a group of outputs: the O_DIRECT writer,
# the bottleneck of a grid, then always has a piece to write while the compute waits on a
# statistics step (ties K = 4 at 1.1B, in-process: 26-31 s with 6 buffers, 23 s with 16)
OUT_CHUNKS_AHEAD = 4
GROUP_OUTPUTS = 4  # outputs of a chunk computed together (a grid); the pool holds 2 more
MAX_COMPUTE_THREADS = 4
# Statistics steps run in their own thread, at most this many tensors ahead of the merge:
# they overlap the chunk compute (on 2 cores, the other core). With the C kernels a tensor's
# statistics are a few numbers (thresholds, cuts, scales), so the thread may run well ahead
# and absorb the uneven sizes of the tensors (measured at 1.1B: one tensor ahead, the compute
# waited 2.3 s of a 9.4 s TIES merge for it, and it 2.6 s for the compute); the torch code
# may hold DARE masks (n bytes per input), so it stays one tensor ahead. 0: no thread, each
# tensor's statistics computed by the compute thread before its first chunk.
STATS_AHEAD = 1
STATS_AHEAD_NATIVE = 16


def stats_ahead() -> int:
    if STATS_AHEAD <= 0:
        return STATS_AHEAD
    return max(STATS_AHEAD, STATS_AHEAD_NATIVE) if native.available() else STATS_AHEAD


_DONE = object()
_CHECKED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # aminmax has these


def compute_threads() -> int:
    """Intra-op threads for the math: the reader and writer threads need cores too. On 2 cores,
    torch's 2 threads fighting them made the lerps 5x slower than 1 thread (measured)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(MAX_COMPUTE_THREADS, cores - 2))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Stop(Exception):
    pass


class _Lease:
    """A pooled buffer shared by several consumers; back to the pool when the last one is done."""

    def __init__(self, buf: torch.Tensor | None, pool: queue.Queue | None) -> None:
        self.buf, self.pool, self.refs = buf, pool, 1
        self._lock = threading.Lock()

    def share(self) -> _Lease:
        with self._lock:
            self.refs += 1
        return self

    def release(self) -> None:
        with self._lock:
            self.refs -= 1
            last = self.refs == 0
        if last and self.pool is not None:
            self.pool.put(self.buf)


@dataclass
class _Chunk:
    entry: PlanEntry
    start: int
    count: int
    last: bool


@dataclass
class _Drop:
    """To the writer, after a tensor's last output piece: its inputs' mapped pages may go
    (zapping page tables costs ~0.4 CPU-s at 1.1B: the writer thread, which mostly waits on
    the disk, pays it, not the compute)."""

    entry: PlanEntry


def _chunks(entries: list[PlanEntry], chunk: int) -> Iterator[_Chunk]:
    for e in entries:
        n = e.numel
        for s in range(0, n, chunk):
            yield _Chunk(e, s, min(chunk, n - s), s + chunk >= n)


class _Pipeline:
    """Stop flag and first error shared by the threads; queue calls that notice a stop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop.set()

    def get(self, q: queue.Queue) -> object:
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stop from None

    def put(self, q: queue.Queue, item: object) -> None:
        while True:
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _Stop from None

    def thread(self, fn: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except _Stop:
                pass
            except BaseException as exc:
                self.fail(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def _pool(count: int, nbytes: int, pin: bool, align: int = 0) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    for _ in range(count):
        if align and not pin:  # written with O_DIRECT from where they are: huge pages
            q.put(dma_empty(nbytes, align))
        elif align:
            q.put(aligned_empty(nbytes, align, pin))
        else:
            q.put(torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin))
    return q


# An input chunk as the reader hands it over: the chunk, then per slot its data and lease
# (None for slots not read: a copied tensor reads its one source slot only).
_InItem = tuple[_Chunk, list[torch.Tensor | None], list[_Lease | None]]


class _Executor:
    """One run of a plan: the pools, the queues and the three stages."""

    def __init__(
        self,
        plan: MergePlan,
        writers: list[StreamingWriter],
        device: str,
        progress: Progress,
        chunk_elems: int | None,
        strict: bool = False,
        names: list[str] | None = None,
    ) -> None:
        self.plan, self.writers = plan, writers
        self.sources = plan.sources
        self.method = plan.method
        self.strict = strict
        self.names = names or [ck.ref for ck in plan.sources]
        self.nonfinite: dict[str, None] = {}  # "NAME (source)" of inputs holding NaN or inf
        self.progress = progress
        # Output order: every file is then written front to back (the O_DIRECT path); the
        # inputs are still read mostly in order, as the outputs follow an input's layout.
        self.entries = sorted(plan.entries, key=lambda e: writers[0].position(e.name))
        self.dev = resolve_device(device)  # `auto`: a GPU if one is visible, else cpu
        self.cuda = self.dev.type == "cuda"
        es = plan.entries
        max_in = max(
            [1] + [itemsize(self.sources[i].tensors[n].dtype) for e in es for i, n in _slots(e)]
        )
        max_out = max([1] + [itemsize(e.out_dtype) for e in es])
        self.chunk_elems = n = chunk_elems or max(1, CHUNK_BYTES // max(max_in, max_out))
        n_slots = max([1] + [len(e.slots) for e in es])
        self.pools = [_pool(IN_BUFFERS, n * max_in, self.cuda) for _ in range(n_slots)]
        # outputs are computed where the writer sends them to the disk from (placed_start)
        group = min(len(writers), GROUP_OUTPUTS)
        n_out = OUT_BUFFERS if self.cuda else max(OUT_BUFFERS, OUT_CHUNKS_AHEAD * group + 2)
        self.out_pool = _pool(n_out, n * max_out + 2 * PLACED_ALIGN, self.cuda, PLACED_ALIGN)
        self.q_in: queue.Queue = queue.Queue(maxsize=IN_BUFFERS)
        self.q_out: queue.Queue = queue.Queue(maxsize=n_out + 2 * len(writers) + 4)
        self.pipe = _Pipeline()
        self._stats: dict[tuple[str, object], object] = {}
        self._index = {e.name: j for j, e in enumerate(self.entries)}
        self._at = -1  # index of the entry the compute thread is merging
        self._cv = threading.Condition()
        self._ahead = stats_ahead()
        self._stats_jobs = self._plan_stats() if self._ahead > 0 else []
        self._stats_names = {e.name for e, _ in self._stats_jobs}
        self._arena = _Arena()  # the statistics' whole-tensor buffer, reused tensor to tensor
        # the entries whose chunk compute reports NaN and inf in its inputs (see _deferred):
        # some output is computed (not an input as it is) by a method whose kernel checks
        kernel_checks = not self.cuda and self.method.checks_finite(plan.compute_dtype)
        self._deferred_names = {
            e.name
            for e in plan.entries
            if kernel_checks
            and e.params is not None
            and any(self.method.identity(p, len(e.slots)) is None for p in e.params)
        }

    # --- reader thread -------------------------------------------------------------------
    def _read(self, k: int, e: PlanEntry, c: _Chunk) -> tuple[torch.Tensor, _Lease]:
        i, name = e.slots[k]  # type: ignore[misc]
        ck = self.sources[i]
        info = ck.tensors[name]
        if info.offset < 0:  # pickle: already a mapped view
            t, lease = ck.read_flat(name, c.start, c.count), _Lease(None, None)
        elif not self.cuda and (view := ck.mapped_flat(name)) is not None:
            # in place in the page cache: no copy, and pages the statistics pass faulted in
            # are there already (CUDA reads into pinned buffers instead, for async copies)
            size = itemsize(info.dtype)
            part = view[c.start * size : (c.start + c.count) * size]
            t, lease = torch.from_numpy(part).view(info.dtype), _Lease(None, None)
            if self._deferred(e) and e.name not in self._stats_names:
                # nothing else touches these pages before the compute reads them (no check
                # here, no statistics pass ahead): fault them in from this core
                ck.populate_mapped(name, c.start, c.count)
        else:
            pool = self.pools[k]
            buf = self.pipe.get(pool)
            t, lease = ck.read_flat(name, c.start, c.count, scratch=buf), _Lease(buf, pool)
        if not self._deferred(e):
            self._check_finite(i, name, t)
        return t, lease

    def _deferred(self, e: PlanEntry) -> bool:
        """The chunk compute checks this entry's inputs for NaN and inf as it reads them (a
        fused kernel: no pass of the reader's over every input byte), or the compute thread
        does where the kernel then was not used."""
        return e.name in self._deferred_names

    def _check_finite(self, i: int, name: str, t: torch.Tensor) -> None:
        """Note an input chunk holding NaN or inf (one pass over the chunk, in the reader
        thread, which waits on the disk anyway); with `strict` that is an error at once."""
        key = f"{name} ({self.names[i]})"
        if t.dtype not in _CHECKED or key in self.nonfinite or t.numel() == 0:
            return
        # min and max carry any NaN (they propagate it) or inf: 10-20x faster than isfinite().all()
        lo, hi = torch.aminmax(t)
        if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
            return
        self._nonfinite(i, name)

    def _nonfinite(self, i: int, name: str) -> None:
        role = self.names[i]
        key = f"{name} ({role})"
        if self.strict:
            raise SgMergeError(
                f"input tensor {name!r} of the {role} checkpoint holds NaN or inf values "
                "(--strict); repair the checkpoint or drop --strict to merge it with a warning"
            )
        self.nonfinite[key] = None

    def _needed(self, e: PlanEntry) -> list[int]:
        """The slots a chunk of `e` needs: the copied one, or those some output computes from
        (an output that is one input exactly needs only that one)."""
        if e.params is None:
            return [e.copy_slot]
        ids = [self.method.identity(p, len(e.slots)) for p in e.params]
        if all(i is not None for i in ids):
            return sorted(set(ids))  # type: ignore[arg-type]
        return list(range(len(e.slots)))

    def reader(self) -> None:
        """Read every chunk in output order, only the slots it needs."""
        for c in _chunks(self.entries, self.chunk_elems):
            e = c.entry
            xs: list[torch.Tensor | None] = [None] * len(e.slots)
            leases: list[_Lease | None] = [None] * len(e.slots)
            for k in self._needed(e):
                xs[k], leases[k] = self._read(k, e, c)
            self.pipe.put(self.q_in, (c, xs, leases))
        self.pipe.put(self.q_in, _DONE)

    # --- writer thread -------------------------------------------------------------------
    def writer(self) -> None:
        """Write each output piece at its offset, then give its buffer back."""
        last_k = len(self.writers) - 1
        while (item := self.pipe.get(self.q_out)) is not _DONE:
            if isinstance(item, _Drop):  # all of its outputs are written: unmap its inputs
                for i, name in _slots(item.entry):
                    self.sources[i].drop_mapped(name)
                continue
            k, c, out, lease, start = item
            offset = c.start * itemsize(c.entry.out_dtype)
            if start is None:
                self.writers[k].write(c.entry.name, out, offset)
            else:
                nbytes = out.numel() * out.element_size()
                self.writers[k].write_placed(c.entry.name, lease.buf, start, nbytes, offset)
            lease.release()
            self.progress.advance(int(c.last and k == last_k), out.numel() * out.element_size())

    # --- compute (caller's thread) -------------------------------------------------------
    def _out_buffer(self, k: int, c: _Chunk) -> tuple[torch.Tensor, _Lease, int]:
        """An output buffer with the piece's place in it (see `placed_start`)."""
        buf = self.pipe.get(self.out_pool)
        size = itemsize(c.entry.out_dtype)
        pos = self.writers[k].position(c.entry.name)[1] + c.start * size
        start = placed_start(pos, size)
        out = buf[start : start + c.count * size].view(c.entry.out_dtype)
        return out, _Lease(buf, self.out_pool), start

    def _emit(self, k: int, c: _Chunk, src: torch.Tensor, lease: _Lease) -> None:
        """Output k of this chunk is an input as it is: hand that buffer to the writer unless
        it needs a cast."""
        if src.dtype == c.entry.out_dtype:
            self.pipe.put(self.q_out, (k, c, src, lease.share(), None))
            return
        out, out_lease, start = self._out_buffer(k, c)
        out.copy_(src)
        self.pipe.put(self.q_out, (k, c, out, out_lease, start))

    def _reader_for(self, e: PlanEntry) -> _TensorReader:
        """Whole-tensor access for a statistics step: any slot, any range, compute dtype."""
        return _TensorReader(self.sources, e, self.plan.compute_dtype, self._arena)

    def _plan_stats(self) -> list[tuple[PlanEntry, list[Params]]]:
        """Per entry in merge order, the outputs' parameters with distinct statistics keys
        (outputs that are an input exactly need none)."""
        jobs = []
        for e in self.entries:
            if e.params is None:
                continue
            keys: dict[object, Params] = {}
            for p in e.params:
                if self.method.identity(p, len(e.slots)) is None:
                    key = self.method.stats_key(p)
                    if key is not None:
                        keys.setdefault(key, p)
            if keys:
                jobs.append((e, list(keys.values())))
        return jobs

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait on the condition (held) until `ready()`, or stop."""
        while not ready():
            if self.pipe.stop.is_set():
                raise _Stop
            self._cv.wait(0.05)

    def stats_worker(self) -> None:
        """Compute the statistics of each tensor that needs them, in merge order, at most
        `stats_ahead()` tensors ahead of the one being merged."""

        for e, ps in self._stats_jobs:
            j = self._index[e.name]
            with self._cv:
                self._wait(lambda j=j: j <= self._at + self._ahead)
            for p in ps:
                ctx = ChunkCtx(e.name, e.numel, 0, self.plan.seed)
                val = self._stats_of(e, ctx, p)
                with self._cv:
                    self._stats[(e.name, self.method.stats_key(p))] = val
                    self._cv.notify_all()

    def _stats_of(self, e: PlanEntry, ctx: ChunkCtx, p: Params) -> object:
        return self.method.stats(self._reader_for(e), ctx, p, len(e.slots))

    def _stats_for(self, e: PlanEntry, p: Params, ctx: ChunkCtx) -> object:
        key = self.method.stats_key(p)
        if key is None:
            return None
        if not self._stats_jobs:  # no statistics thread: computed here, when first needed
            if (e.name, key) not in self._stats:
                self._stats[(e.name, key)] = self._stats_of(e, ctx, p)
            return self._stats[(e.name, key)]
        with self._cv:
            self._wait(lambda: (e.name, key) in self._stats)
            return self._stats[(e.name, key)]

    def _todo(self, c: _Chunk) -> list[tuple[int, Params, object, ChunkCtx]]:
        """The outputs of this chunk to compute (not endpoints), with their statistics."""
        e = c.entry
        assert e.params is not None
        ctx = ChunkCtx(e.name, e.numel, c.start, self.plan.seed)
        if self._index[e.name] != self._at:
            with self._cv:
                self._at = self._index[e.name]
                self._cv.notify_all()
        todo = []
        for k, p in enumerate(e.params):
            if self.method.identity(p, len(e.slots)) is None:
                todo.append((k, p, self._stats_for(e, p, ctx), ctx))
        if c.last:  # the statistics of a tensor are needed by its chunks only
            with self._cv:
                for key in [key for key in self._stats if key[0] == e.name]:
                    del self._stats[key]
                self._cv.notify_all()
        return todo

    def _merge_cpu(self, c: _Chunk, xs: list[torch.Tensor | None]) -> None:
        """The chunk's outputs in groups of up to GROUP_OUTPUTS, one `compute_many` each (a
        method may share work between a grid's outputs)."""
        cd = self.plan.compute_dtype
        todo = self._todo(c)
        for g in range(0, len(todo), GROUP_OUTPUTS):
            part = todo[g : g + GROUP_OUTPUTS]
            bufs = [self._out_buffer(k, c) for k, *_ in part]
            seen = self.method.compute_many(
                [b[0] for b in bufs], xs, [t[1] for t in part], [t[2] for t in part], part[0][3], cd
            )
            if g == 0 and self._deferred(c.entry):  # the reader left the check to us
                for k, x in enumerate(xs):
                    i, name = c.entry.slots[k]  # type: ignore[misc]
                    if x is None:
                        continue
                    if seen is None or k not in seen:
                        self._check_finite(i, name, x)
                    elif seen[k]:
                        self._nonfinite(i, name)
            for (k, *_), (out, lease, start) in zip(part, bufs, strict=True):
                self.pipe.put(self.q_out, (k, c, out, lease, start))

    def _merge_cuda(self, c: _Chunk, xs: list[torch.Tensor | None]) -> None:
        """Pinned chunks to the device and results back with non-blocking copies; one stream
        sync per chunk before the pinned buffers are reused or written."""
        todo = self._todo(c)
        if not todo:
            return
        cd = self.plan.compute_dtype
        xd = [x.to(self.dev, non_blocking=True) if x is not None else None for x in xs]
        ready = []
        for k, p, stats, ctx in todo:
            res = torch.empty(c.count, dtype=c.entry.out_dtype, device=self.dev)
            self.method.compute_into(res, xd, p, stats, ctx, cd)
            out, lease, start = self._out_buffer(k, c)
            out.copy_(res, non_blocking=True)
            ready.append((k, c, out, lease, start))
        self._synchronize()
        for item in ready:
            self.pipe.put(self.q_out, item)

    def _synchronize(self) -> None:
        if self.cuda:
            torch.cuda.current_stream(self.dev).synchronize()

    def _compute_one(self, item: _InItem) -> None:
        c, xs, leases = item
        e = c.entry
        if e.params is None:  # copied tensor
            x, lease = xs[e.copy_slot], leases[e.copy_slot]
            assert x is not None and lease is not None
            for k in range(len(self.writers)):
                self._emit(k, c, x, lease)
        else:
            (self._merge_cuda if self.cuda else self._merge_cpu)(c, xs)
            n = len(e.slots)
            for k, p in enumerate(e.params):
                i = self.method.identity(p, n)
                if i is not None:
                    x, lease = xs[i], leases[i]
                    assert x is not None and lease is not None
                    self._emit(k, c, x, lease)
        for lease in leases:
            if lease is not None:
                lease.release()
        if c.last and not self.cuda:  # the writer lets go of its mapped pages when done
            self.pipe.put(self.q_out, _Drop(e))

    def compute(self) -> None:
        while (item := self.pipe.get(self.q_in)) is not _DONE:
            self._compute_one(item)  # type: ignore[arg-type]
        self.pipe.put(self.q_out, _DONE)

    def run(self) -> None:
        """Run the three stages; re-raise the first error any of them hit."""
        nbytes = sum(e.numel * itemsize(e.out_dtype) for e in self.plan.entries)
        self.progress.start("merging", len(self.plan.entries), nbytes * len(self.writers))
        threads = [self.pipe.thread(self.reader), self.pipe.thread(self.writer)]
        if self._stats_jobs:
            threads.append(self.pipe.thread(self.stats_worker))
        try:
            self.compute()
        except _Stop:
            pass
        except BaseException as exc:
            self.pipe.fail(exc)
        finally:
            if self.pipe.error is not None:
                self.pipe.stop.set()
            for t in threads:
                t.join()
            self.progress.finish()
        if self.pipe.error is not None:
            raise self.pipe.error


class _Arena:
    """One growing uint8 buffer for a statistics step's whole-tensor scratch, kept for the
    run: a fresh buffer per tensor costs its page faults every time (measured: 4.9 against
    1.1 ns an element for TIES' |tau| pass). Used by one thread at a time: the statistics
    thread, or the compute thread when there is none."""

    def __init__(self) -> None:
        self._buf = torch.empty(0, dtype=torch.uint8)

    def __call__(self, nbytes: int) -> torch.Tensor:
        if self._buf.numel() < nbytes:
            self._buf = torch.empty(0, dtype=torch.uint8)  # the old one goes first
            self._buf = torch.empty(nbytes, dtype=torch.uint8)
        return self._buf[:nbytes]


class _TensorReader:
    """A statistics step's access to one tensor of every slot: `reader(k, start, count)` in
    the compute dtype (a fresh tensor), `reader.raw(k, start, count, scratch)` as stored
    (into the caller's uint8 scratch, for kernels that convert as they go), and
    `reader.scratch(nbytes)`, a uint8 buffer reused from tensor to tensor."""

    def __init__(
        self, sources: list, e: PlanEntry, compute_dtype: torch.dtype, arena: _Arena
    ) -> None:
        self.sources, self.e, self.cd, self.scratch = sources, e, compute_dtype, arena

    def __call__(self, k: int, start: int, count: int) -> torch.Tensor:
        return self.raw(k, start, count).to(self.cd, copy=True)

    def raw(
        self, k: int, start: int, count: int, scratch: torch.Tensor | None = None
    ) -> torch.Tensor:
        i, name = self.e.slots[k]  # type: ignore[misc]
        return self.sources[i].read_flat(name, start, count, scratch=scratch)

    def stored_at(self, k: int) -> tuple[os.stat_result, int, int, torch.dtype] | None:
        """Where slot k's stored bytes are: the file's stat, their offset and length, and
        their dtype (None: not a safetensors tensor); see `Checkpoint.stored_at`."""
        i, name = self.e.slots[k]  # type: ignore[misc]
        ck = self.sources[i]
        got = ck.stored_at(name)
        return None if got is None else (*got, ck.tensors[name].dtype)

    def mapped(self, k: int) -> tuple[np.ndarray, torch.dtype] | None:
        """Slot k's whole stored tensor as a zero-copy view of the page cache (uint8) and
        its dtype, where the format allows (safetensors), else None."""
        i, name = self.e.slots[k]  # type: ignore[misc]
        ck = self.sources[i]
        got = ck.mapped_flat(name)
        return None if got is None else (got, ck.tensors[name].dtype)


def _slots(e: PlanEntry) -> list[tuple[int, str]]:
    return [s for s in e.slots if s is not None]


def execute(
    plan: MergePlan,
    writers: list[StreamingWriter],
    device: str = "cpu",
    progress: Progress | None = None,
    chunk_elems: int | None = None,
    strict: bool = False,
    names: list[str] | None = None,
) -> list[str]:
    """Compute every output tensor of the plan and write it through `writers` (one per output).

    Memory is (slots * IN_BUFFERS + the output pool) buffers of CHUNK_BYTES, whatever the
    model size or the dtypes (the output pool: OUT_BUFFERS on a GPU, on the CPU
    OUT_CHUNKS_AHEAD chunks of up to GROUP_OUTPUTS outputs, 6-18 buffers; the input buffers
    stay untouched where safetensors inputs are read in place), plus what a method's
    statistics step holds for one tensor (at most its float32 copy); `chunk_elems` overrides
    the chunk length (tests).
    Returns the input tensors that hold NaN or inf ("NAME (source)", the source named by
    `names[i]`, default its reference); with `strict` the first such tensor is an SgMergeError
    instead."""
    ex = _Executor(plan, writers, device, progress or NullProgress(), chunk_elems, strict, names)
    with _torch_threads(compute_threads()):
        ex.run()
    return list(ex.nonfinite)
