"""The streaming executor: a reader thread fills reusable buffers in file order, the caller's
thread computes every alpha of a chunk, a writer thread puts bytes at their final offsets.
Memory is a few fixed chunk buffers whatever the model size; inputs are read once for all
alphas."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from mergekit_sg.io.checkpoint import Checkpoint
from mergekit_sg.io.dtypes import itemsize
from mergekit_sg.io.safetensors_write import StreamingWriter
from mergekit_sg.merge.math import lerp_into
from mergekit_sg.merge.plan import MergePlan, PlanEntry
from mergekit_sg.progress import NullProgress, Progress

CHUNK_ELEMS = 1 << 22  # 4M elements: 8 MB of bfloat16 per buffer
IN_BUFFERS = 3  # per input side
OUT_BUFFERS = 6
_DONE = object()


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


def _chunks(plan: MergePlan, chunk: int) -> Iterator[_Chunk]:
    for e in plan.entries:
        n = e.numel
        for s in range(0, n, chunk):
            yield _Chunk(e, s, min(chunk, n - s), s + chunk >= n)


class _Pipeline:
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


def _pool(count: int, nbytes: int, pin: bool) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    for _ in range(count):
        q.put(torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin))
    return q


def execute(
    plan: MergePlan,
    pre: Checkpoint,
    ft: Checkpoint,
    writers: list[StreamingWriter],
    device: str = "cpu",
    progress: Progress | None = None,
    chunk_elems: int = CHUNK_ELEMS,
) -> None:
    """Compute every output tensor of the plan and write it through `writers` (one per alpha)."""
    progress = progress or NullProgress()
    k_out = len(writers)
    dev = torch.device(device)
    pin = dev.type == "cuda"
    max_in = max((itemsize(pre.tensors[e.src_pre].dtype) for e in plan.entries), default=1)
    max_in = max([max_in] + [itemsize(ft.tensors[e.src_ft].dtype) for e in plan.entries])
    max_out = max((itemsize(e.out_dtype) for e in plan.entries), default=1)
    pools = {
        "pre": _pool(IN_BUFFERS, chunk_elems * max_in, pin),
        "ft": _pool(IN_BUFFERS, chunk_elems * max_in, pin),
    }
    out_pool = _pool(OUT_BUFFERS, chunk_elems * max_out, pin)
    q_in: queue.Queue = queue.Queue(maxsize=IN_BUFFERS)
    q_out: queue.Queue = queue.Queue(maxsize=OUT_BUFFERS + 2 * k_out)
    pipe = _Pipeline()
    total_bytes = sum(e.numel * itemsize(e.out_dtype) for e in plan.entries) * k_out
    progress.start("merging", len(plan.entries), total_bytes)

    def read(side: str, ck: Checkpoint, name: str, c: _Chunk) -> tuple[torch.Tensor, _Lease]:
        if ck.tensors[name].offset < 0:  # pickle: already a mapped view
            return ck.read_flat(name, c.start, c.count), _Lease(None, None)
        buf = pipe.get(pools[side])
        return ck.read_flat(name, c.start, c.count, scratch=buf), _Lease(buf, pools[side])

    def reader() -> None:
        for c in _chunks(plan, chunk_elems):
            r = c.entry.rule
            if r.kind == "copy":
                ck, name = (
                    (pre, c.entry.src_pre) if r.side == "pretrained" else (ft, c.entry.src_ft)
                )
                a, la = read("pre" if ck is pre else "ft", ck, name, c)
                pipe.put(q_in, (c, a, la, None, None))
            else:
                a, la = read("pre", pre, c.entry.src_pre, c)
                b, lb = read("ft", ft, c.entry.src_ft, c)
                pipe.put(q_in, (c, a, la, b, lb))
        pipe.put(q_in, _DONE)

    def writer() -> None:
        while (item := pipe.get(q_out)) is not _DONE:
            k, c, out, lease = item
            writers[k].write(c.entry.name, out, c.start * itemsize(c.entry.out_dtype))
            lease.release()
            progress.advance(int(c.last and k == k_out - 1), out.numel() * out.element_size())

    def emit(k: int, c: _Chunk, src: torch.Tensor, lease: _Lease) -> None:
        """Hand an input buffer straight to the writer when no cast is needed."""
        if src.dtype == c.entry.out_dtype:
            pipe.put(q_out, (k, c, src, lease.share()))
            return
        buf = pipe.get(out_pool)
        out = buf[: c.count * itemsize(c.entry.out_dtype)].view(c.entry.out_dtype)
        out.copy_(src)
        pipe.put(q_out, (k, c, out, _Lease(buf, out_pool)))

    def compute() -> None:
        while (item := pipe.get(q_in)) is not _DONE:
            c, a, la, b, lb = item
            e = c.entry
            if e.rule.kind == "copy":
                for k in range(k_out):
                    emit(k, c, a, la)
            else:
                a_d, b_d = (
                    (a, b)
                    if not pin
                    else (a.to(dev, non_blocking=True), b.to(dev, non_blocking=True))
                )
                for k, alpha in enumerate(e.rule.alphas):
                    if alpha in (0.0, 1.0):
                        emit(k, c, a if alpha == 0.0 else b, la if alpha == 0.0 else lb)
                        continue
                    buf = pipe.get(out_pool)
                    out = buf[: c.count * itemsize(e.out_dtype)].view(e.out_dtype)
                    if pin:
                        res = torch.empty(c.count, dtype=e.out_dtype, device=dev)
                        lerp_into(res, a_d, b_d, alpha, plan.compute_dtype)
                        out.copy_(res)
                    else:
                        lerp_into(out, a_d, b_d, alpha, plan.compute_dtype)
                    pipe.put(q_out, (k, c, out, _Lease(buf, out_pool)))
                lb.release()
            la.release()
        pipe.put(q_out, _DONE)

    threads = [pipe.thread(reader), pipe.thread(writer)]
    try:
        compute()
    except _Stop:
        pass
    except BaseException as exc:
        pipe.fail(exc)
    finally:
        if pipe.error is not None:
            pipe.stop.set()
        for t in threads:
            t.join()
        progress.finish()
    if pipe.error is not None:
        raise pipe.error
