"""Task-vector methods (mergekit's generalized task arithmetic): with task vectors
tau_i = theta_i - theta_base,

    tau_i'  = sparsify_i(tau_i)                     (ties: top-`density` by magnitude;
                                                     dare: Bernoulli(`density`) keep;
                                                     breadcrumbs: drop the top `gamma`,
                                                     keep the next `density`)
    tau_i'' = rescale ? tau_i' * ||tau_i||_1 / ||tau_i'||_1 : tau_i'
    m       = sign election ? (sum_i w_i tau_i'' > = 0 ? +1 : -1)     (ties, dare_ties)
    M_i     = sign election ? [sign(w_i tau_i'') == m] : 1
    delta   = sum_i M_i w_i tau_i'' / (normalize ? sum_i M_i w_i : 1)
    theta   = theta_base + lambda * delta

`normalize` divides by the sum of the weights that voted (1 where none did, or where the sum
is below 1e-8 without election). Defaults as in mergekit 0.1.5: normalize is true for ties
and false for the others, rescale true for dare, lambda 1, gamma 0.01. The magnitude
thresholds and the L1 norms are the statistics step; the elementwise rest runs per chunk."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Hashable
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergekit_sg.merge import early_stats
from mergekit_sg.merge.methods import native
from mergekit_sg.merge.methods.base import (
    COMPUTE_BLOCK,
    STATS_CHUNK,
    ChunkCtx,
    Method,
    Params,
    Reader,
    stream_pass,
)
from mergekit_sg.merge.methods.draws import dare_key, dare_threshold, keep_bits
from mergekit_sg.merge.methods.select import (
    TopSet,
    resolve_cut,
    sample_step,
    top_set,
    top_set_scan,
)
from mergekit_sg.merge.methods.tops import first_cap
from mergekit_sg.merge.methods.tops import kth_native as _kth
from mergekit_sg.merge.methods.tops import ranks_native as _ranks
from mergekit_sg.merge.methods.tops import scan_tops as _scan_tops


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v}")
    return v


class GTAShared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    normalize: bool = False
    rescale: bool = False
    lambda_: float = Field(default=1.0, alias="lambda")
    int8_mask: bool = False  # mergekit's mask dtype: no effect on the values
    _f = field_validator("lambda_")(classmethod(lambda cls, v: _finite(v)))

    def model_dump(self, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        return super().model_dump(by_alias=True, **kw)


class TiesShared(GTAShared):
    normalize: bool = True


class DareShared(GTAShared):
    rescale: bool = True


class TaskInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float
    density: float = Field(default=1.0, gt=0.0, le=1.0)
    _f = field_validator("weight")(classmethod(lambda cls, v: _finite(v)))


class BreadcrumbsInput(TaskInput):
    gamma: float = Field(default=0.01, ge=0.0, le=1.0)


Sparsify = Literal["none", "magnitude", "random", "outliers"]


_M32 = 0xFFFFFFFF


def _lowbias32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 integer hash of uint32 values held in int64 (products wrap, the low 32
    bits stay exact)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def dare_keep(ctx: ChunkCtx, slot: int, start: int, count: int, density: float) -> torch.Tensor:
    """The Bernoulli(density) keep mask (bool) of elements [start, start+count) of one input's
    task vector: element g is kept when draw(g) >> 8 < ceil(density * 2^24), with
    draw(g) = h(h(lo(g) ^ lo(key)) ^ hi(key) ^ hi(g) * 0x9E3779B9), h the lowbias32 integer
    hash and key = hash(seed, tensor name, input). A counter-based draw: each element's
    draw depends on its index alone, not on the chunking, the threads or the order; the
    fused kernel makes the same draw in C, 8 lanes at a time (well under 1 ns an element,
    against ~4 for a seeded torch.rand)."""
    key, t = dare_key(ctx.seed, ctx.name, slot), dare_threshold(density)
    lib = native.lib()
    if lib is not None:
        out = torch.empty(count, dtype=torch.uint8)
        lib.gta_dare_mask(start, count, key, t, out.data_ptr())
        return out.view(torch.bool)
    g = torch.arange(start, start + count, dtype=torch.int64)
    h = _lowbias32((g & _M32) ^ (key & _M32))
    h = _lowbias32(h ^ (key >> 32) ^ (((g >> 32) * 0x9E3779B9) & _M32))
    return (h >> 8) < t


def _address(arr: np.ndarray | None) -> int | None:
    return None if arr is None else arr.ctypes.data


class _InputStats:
    """One input's statistics: its kept set (magnitude methods) and its rescale factor."""

    def __init__(
        self,
        keep_top: TopSet | None,
        drop_top: TopSet | None,
        scale: float,
        keep: torch.Tensor | None = None,
        bits: np.ndarray | None = None,
    ) -> None:
        self.keep_top, self.drop_top, self.scale = keep_top, drop_top, scale
        self.keep = keep  # DARE's keep mask of the whole tensor, drawn once in the stats step
        self.bits = bits  # the same mask as bits (LSB first), from the native statistics pass


class TaskArithmeticFamily(Method):
    """Base of the task-vector methods; subclasses pick the sparsification and the election."""

    base = "required"
    sparsify: ClassVar[Sparsify] = "none"
    elect: ClassVar[bool] = False
    Shared = GTAShared
    PerInput = TaskInput
    grid_per_input = ("weight", "density")

    def _active(self, p: Params) -> list[int]:
        """Input slots (1..N) whose task vector is sparsified (density < 1)."""
        if self.sparsify == "none":
            return []
        return [i + 1 for i, q in enumerate(p.per_input[1:]) if q.density < 1.0]  # type: ignore[union-attr]

    def stats_key(self, p: Params) -> Hashable | None:
        act = self._active(p)
        if not act:
            return None
        extra = tuple(getattr(p.per_input[i], "gamma", None) for i in act)
        dens = tuple(p.per_input[i].density for i in act)  # type: ignore[union-attr]
        return (tuple(act), dens, extra, p.shared.rescale)  # type: ignore[attr-defined]

    def identity(self, p: Params, slots: int) -> int | None:
        lam = p.shared.lambda_  # type: ignore[attr-defined]
        ws = [q.weight for q in p.per_input[1:]]  # type: ignore[union-attr]
        if lam == 0.0 or slots == 1 or all(w == 0.0 for w in ws):
            return 0
        return None

    def stats(self, read: Reader, ctx: ChunkCtx, p: Params, slots: int) -> Any:
        """Per sparsified input: the magnitude sets over the whole tensor (one float32 buffer
        of the tensor, reused across inputs, partitioned in place by the selection) and the
        L1 rescale factor. DARE's keep masks drawn here are kept for the chunks while they fit
        in the float32 size of the tensor (the statistics' memory allowance)."""
        lib = native.lib()
        if lib is not None and ctx.numel > 0 and read(0, 0, 1).dtype == torch.float32:
            return self._stats_native(lib, read, ctx, p)
        out: dict[int, _InputStats] = {}
        n = ctx.numel
        buf = (
            torch.empty(n, dtype=torch.float32)
            if self.sparsify in ("magnitude", "outliers")
            else None
        )
        act = self._active(p)
        # at most 2 masks (n bytes each): with the statistics thread one tensor ahead, two
        # tensors' masks (4n bytes) stay within the float32 size of the largest tensor
        cache_masks = self.sparsify == "random" and p.shared.rescale and len(act) <= 2  # type: ignore[attr-defined]
        for i in act:
            q = p.per_input[i]
            keep_top = drop_top = None
            l1 = 0.0
            if buf is not None:
                for s, b in stream_pass(read, 0, n):
                    torch.sub(read(i, s, b.numel()), b, out=buf[s : s + b.numel()]).abs_()
                if p.shared.rescale:  # type: ignore[attr-defined]
                    l1 = float(buf.sum(dtype=torch.float64))
                if self.sparsify == "magnitude":
                    keep_top = top_set(buf, max(1, int(q.density * n)))  # type: ignore[union-attr]
                else:
                    target = int(q.density * n)  # type: ignore[union-attr]
                    n_top = int(q.gamma * n)  # type: ignore[union-attr]
                    n_bot = max(0, n - target - n_top)
                    drop_top = top_set(buf, n - n_bot - target)
                    keep_top = top_set(buf, n - n_bot)
            scale = 1.0
            keep = torch.empty(n, dtype=torch.bool) if cache_masks else None
            if p.shared.rescale:  # type: ignore[attr-defined]
                kept = 0.0
                for s, b in stream_pass(read, 0, n):
                    d = read(i, s, b.numel()).sub_(b)
                    if buf is None:
                        l1 += float(d.abs().sum(dtype=torch.float64))
                    if self.sparsify == "random":
                        m = dare_keep(ctx, i, s, d.numel(), q.density)  # type: ignore[union-attr]
                        if keep is not None:
                            keep[s : s + d.numel()] = m
                        kept += float(d.abs_().mul_(m).sum(dtype=torch.float64))
                    else:
                        a = self._mask_f(i, d, s, ctx, q, keep_top, drop_top)
                        kept += float(a.mul_(d.abs_()).sum(dtype=torch.float64))
                if l1 >= 1e-7 and kept >= 1e-7:
                    scale = l1 / kept
            out[i] = _InputStats(keep_top, drop_top, scale, keep)
        return out

    def _sizes(self, q: Any, n: int) -> list[int]:
        """The sizes of an input's magnitude sets: TIES keeps the top max(1, density * n);
        breadcrumbs drops the top gamma * n and keeps the next density * n, i.e. the top
        n - n_bot minus the top n - n_bot - density * n (n_bot: the smallest, dropped)."""
        if self.sparsify == "magnitude":
            return [max(1, int(q.density * n))]
        target = int(q.density * n)
        n_bot = max(0, n - target - int(q.gamma * n))
        return [n - n_bot - target, n - n_bot]

    def _stats_native(self, lib: Any, read: Reader, ctx: ChunkCtx, p: Params) -> Any:
        """The statistics with the C kernels. Where the reader maps the stored tensors
        (safetensors in the page cache), the magnitude sets of every input come from one
        pass over the base and all the inputs together (`_scan_tops`: the bracket select of
        `top_set_scan`, |tau| computed on the fly, the base read and converted once for all
        inputs; the same sets as `top_set`, with the cut, so chunks can be merged in any
        order); no |tau| buffer and no copy of the inputs. Otherwise, or where a bracket
        misses, |tau| is written into a float32 buffer of the tensor first (a buffer reused
        from tensor to tensor) and scanned, or partitioned (NaN, a missed bracket). DARE's
        rescale sums are one pass with the draw, over all inputs at once; the drawn masks are
        kept as bits for the chunk kernel while draws.BITS_BUDGET has room, else drawn again."""
        out: dict[int, _InputStats] = {}
        n = ctx.numel
        act = self._active(p)
        mag = self.sparsify in ("magnitude", "outliers")
        rescale = p.shared.rescale  # type: ignore[attr-defined]
        mapped = getattr(read, "mapped", None)  # whole stored tensors, read in place
        raw = getattr(read, "raw", None)  # pieces as stored: the kernel converts them
        arena = getattr(read, "scratch", None)
        views: dict[int, tuple[Any, int] | None] = {}

        def whole(k: int) -> tuple[Any, int] | None:
            """(array holding slot k's stored tensor, kernel dtype code), or None."""
            if k not in views:
                got = mapped(k) if mapped is not None else None
                views[k] = (got[0], _CODES[got[1]]) if got and got[1] in _CODES else None
            return views[k]

        def pieces(slots: list[int]) -> Any:
            """(start, count, [(pointer, code) of the base and each slot], keep-alive): the
            whole tensors where all are mapped, else STATS_CHUNK pieces, each slot's read once
            (as stored where the kernels convert it, else in float32)."""
            ws = [whole(k) for k in (0, *slots)]
            if all(w is not None for w in ws):
                yield 0, n, [(w[0].ctypes.data, w[1]) for w in ws], None  # type: ignore[index]
                return
            # 8 bytes an element: a float64 source fits too
            scratch = [torch.empty(STATS_CHUNK * 8, dtype=torch.uint8) for _ in ws]
            for s in range(0, n, STATS_CHUNK):
                c = min(STATS_CHUNK, n - s)
                ts = []
                for k, scr in zip((0, *slots), scratch, strict=True):
                    t = raw(k, s, c, scr) if raw is not None else None
                    ts.append(t if t is not None and t.dtype in _CODES else read(k, s, c))
                yield s, c, [(t.data_ptr(), _CODES[t.dtype]) for t in ts], ts

        buf_t: list[torch.Tensor] = []

        def buffer() -> torch.Tensor:
            if not buf_t:
                if arena is not None:
                    buf_t.append(arena(4 * n).view(torch.float32))
                else:
                    buf_t.append(torch.empty(n, dtype=torch.float32))
            return buf_t[0]

        def gather(call: Any) -> Any:
            """A BracketScan from call(lo, hi, vals, idx, cap, counts) -> found."""

            def scan(lo: float, hi: float, limit: int) -> Any:
                cap = first_cap(n)
                while True:
                    vals, idx = np.empty(cap, np.float32), np.empty(cap, np.int64)
                    counts = np.zeros(2, np.int64)
                    found = call(lo, hi, vals.ctypes.data, idx.ctypes.data, cap, counts.ctypes.data)
                    if found > limit:
                        return None
                    if found <= cap:
                        return int(counts[0]), int(counts[1]), vals[:found], idx[:found]
                    cap = found  # more than the first guess: once more, room for them all

            return scan

        def abs_pieces(i: int) -> Any:
            for s, b in stream_pass(read, 0, n):
                yield s, read(i, s, b.numel()).sub_(b).abs_()

        kth = partial(_kth, lib)
        step = sample_step(n)
        tops_of: dict[int, list[TopSet | None]] = {}
        if mag and not rescale and whole(0) is not None:
            xs = {i: w for i in act if (w := whole(i)) is not None}
            sizes = {i: self._sizes(p.per_input[i], n) for i in xs}
            tops_of = _computed_ahead(read, sizes, n)
            rest = {i: w for i, w in xs.items() if i not in tops_of}
            if rest:
                more = _scan_tops(lib, whole(0), rest, n, {i: sizes[i] for i in rest}, arena)  # type: ignore[arg-type]
                tops_of.update(more)
        dare: dict[int, np.ndarray] = {}
        bits: dict[int, np.ndarray | None] = {}
        if not mag and rescale and act:  # DARE: l1 and kept sums and the keep bits, per input
            draw = {
                i: (dare_key(ctx.seed, ctx.name, i), dare_threshold(p.per_input[i].density))  # type: ignore[union-attr]
                for i in act
            }
            mapped_in = [i for i in act if whole(i) is not None] if whole(0) is not None else []
            for i, (l1, kept, b) in _dare_ahead(read, {i: draw[i] for i in mapped_in}, n).items():
                dare[i], bits[i] = np.array([l1, kept]), b
            groups = [
                [i for i in mapped_in if i not in dare],
                [i for i in act if i not in mapped_in],
            ]
            for g in groups:
                if not g:
                    continue
                for i in g:
                    bits[i] = keep_bits((n + 7) // 8)
                sums = np.zeros(2 * len(g), np.float64)
                keys = (ctypes.c_uint64 * len(g))(*[draw[i][0] for i in g])
                ts = (ctypes.c_uint64 * len(g))(*[draw[i][1] for i in g])
                bp = (ctypes.c_void_p * len(g))(*[_address(bits[i]) for i in g])
                for s, c, ptrs, _keep in pieces(g):
                    xp = (ctypes.c_void_p * len(g))(*[q[0] for q in ptrs[1:]])
                    xc = (ctypes.c_int32 * len(g))(*[q[1] for q in ptrs[1:]])
                    lib.gta_dare_sums_n(
                        ptrs[0][0], ptrs[0][1], xp, xc, keys, ts, len(g), c, s, sums.ctypes.data, bp
                    )
                for k, i in enumerate(g):
                    dare[i] = sums[2 * k : 2 * k + 2]
        for i in act:
            q = p.per_input[i]
            keep_top = drop_top = None
            l1 = kept = 0.0
            scale = 1.0
            if mag:
                sizes_i = self._sizes(q, n)
                tops = tops_of.get(i, [None])
                if any(t is None for t in tops):  # |tau| into the buffer, then scanned
                    buf = buffer()
                    bptr, arr = buf.data_ptr(), buf.numpy()
                    for s, c, ptrs, _keep in pieces([i]):
                        (bp, bc), (xp, xc) = ptrs
                        lib.gta_absdiff(bp, bc, xp, xc, c, bptr + 4 * s)
                    if rescale:
                        l1 = float(buf.sum(dtype=torch.float64))
                    scan = gather(
                        lambda lo, hi, v, ix, cap, cnt, bptr=bptr: lib.gta_bracket(
                            bptr, n, lo, hi, v, ix, cap, cnt
                        )
                    )
                    ranks = partial(_ranks, lib)
                    tops = [
                        top_set_scan(n, c, lambda a=arr: a[::step].copy(), scan, kth, ranks)
                        for c in sizes_i
                    ]
                    if any(t is None for t in tops):  # the partition (it permutes the buffer)
                        tops = [resolve_cut(top_set(buf, c), abs_pieces(i)) for c in sizes_i]
                if self.sparsify == "magnitude":
                    keep_top = tops[0]
                else:
                    drop_top, keep_top = tops
                if rescale:
                    for s, d in abs_pieces(i):
                        a = self._mask_f(i, d, s, ctx, q, keep_top, drop_top)
                        kept += float(a.mul_(d).sum(dtype=torch.float64))
            elif rescale:  # DARE
                l1, kept = float(dare[i][0]), float(dare[i][1])
            if rescale and l1 >= 1e-7 and kept >= 1e-7:
                scale = l1 / kept
            out[i] = _InputStats(keep_top, drop_top, scale, bits=bits.get(i))
        return out

    def _mask_f(
        self,
        slot: int,
        d: torch.Tensor,
        start: int,
        ctx: ChunkCtx,
        q: Any,
        keep_top: TopSet | None,
        drop_top: TopSet | None,
        keep: torch.Tensor | None = None,
        tmp: torch.Tensor | None = None,
        tmp2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The keep mask of the chunk d of the task vector, float 1.0/0.0 in d's dtype (a
        multiply by it is the multiply by the boolean mask, without a conversion pass);
        `tmp`/`tmp2` (d's size and dtype) are scratch the magnitude masks are made in."""
        if self.sparsify == "random":
            if keep is not None:
                m = keep[start : start + d.numel()].to(d.device, non_blocking=True)
            else:
                m = dare_keep(ctx, slot, start, d.numel(), q.density).to(d.device)
            return m.to(d.dtype)
        assert keep_top is not None
        a = keep_top.mask_(d.abs() if tmp is None else torch.abs(d, out=tmp), start)
        if drop_top is not None:  # the dropped top set is a prefix of the kept one
            a.sub_(drop_top.mask_(d.abs() if tmp2 is None else torch.abs(d, out=tmp2), start))
        return a

    def compute(self, xs, p, stats, ctx):  # type: ignore[override]
        """The merged chunk from the inputs' chunks (changed in place); see `_combine`."""
        scratch = [torch.empty_like(xs[0]) for _ in range(4)]
        return self._combine(xs, p, stats, ctx, scratch)

    def compute_into(self, out, xs, p, stats, ctx, compute_dtype) -> None:  # type: ignore[override]
        """As Method.compute_into, with every temporary of a block in scratch buffers made
        once per chunk (no allocation per operation: on this CPU a fresh 1 MB temporary
        costs more than the operation that fills it)."""
        lib = native.lib()
        if lib is not None and self._native_ok(out, xs, stats, compute_dtype):
            lam = p.shared.lambda_  # type: ignore[attr-defined]
            self._combine_native(lib, [out], xs, p, stats, ctx, [lam])  # type: ignore[arg-type]
            return
        n = out.numel()
        blk = min(n, COMPUTE_BLOCK)
        present = [j for j, x in enumerate(xs) if x is not None]
        bufs = {j: torch.empty(blk, dtype=compute_dtype, device=out.device) for j in present}
        scratch = [torch.empty(blk, dtype=compute_dtype, device=out.device) for _ in range(4)]
        for s in range(0, n, blk):
            e = min(n, s + blk)
            m = e - s
            conv = [
                bufs[j][:m].copy_(xs[j][s:e]) if xs[j] is not None else None for j in range(len(xs))
            ]  # type: ignore[index]
            sub = replace(ctx, start=ctx.start + s)
            out[s:e].copy_(self._combine(conv, p, stats, sub, [b[:m] for b in scratch]))  # type: ignore[arg-type]

    def _native_ok(
        self,
        out: torch.Tensor,
        xs: list[torch.Tensor | None],
        stats: Any,
        compute_dtype: torch.dtype,
    ) -> bool:
        """The fused kernel computes float32 on the CPU from float32/bfloat16 chunks into a
        float32/bfloat16 output, with every top set's cut known; anything else is torch's."""
        ok = (torch.float32, torch.bfloat16)
        if compute_dtype != torch.float32 or out.device.type != "cpu" or out.dtype not in ok:
            return False
        if not 2 <= len(xs) <= native.MAX_INPUTS + 1 or not out.is_contiguous():
            return False
        for x in xs:
            if x is None or x.dtype not in ok or x.device.type != "cpu" or not x.is_contiguous():
                return False
        for st in (stats or {}).values():
            for top in (st.keep_top, st.drop_top):
                done = top is None or top.everything or top.nothing or top.all_ties
                if not done and top.cut is None:  # type: ignore[union-attr]
                    return False
        return True

    def checks_finite(self, compute_dtype: torch.dtype) -> bool:
        return compute_dtype == torch.float32 and native.available()

    def compute_many(self, outs, xs, ps, stats, ctx, compute_dtype) -> dict[int, bool] | None:  # type: ignore[override]
        """Outputs that differ only in lambda (a lambda grid) and share their statistics are
        one kernel call: the masked, weighted, elected task vectors are made once per chunk
        and each output is base + lambda * delta. The kernel notes NaN and inf in the inputs
        as it reads them (returned per slot)."""
        lib = native.lib()
        seen: int | None = None
        groups: dict[Hashable, list[int]] = {}
        for j, p in enumerate(ps):
            shared = p.shared.model_copy(update={"lambda_": 0.0})
            groups.setdefault((p.per_input, shared, id(stats[j])), []).append(j)
        for js in groups.values():
            first = js[0]
            if lib is not None and all(
                self._native_ok(outs[j], xs, stats[j], compute_dtype) for j in js
            ):
                lams = [ps[j].shared.lambda_ for j in js]  # type: ignore[attr-defined]
                seen = self._combine_native(
                    lib, [outs[j] for j in js], xs, ps[first], stats[first], ctx, lams
                )  # type: ignore[arg-type]
            else:
                for j in js:
                    self.compute_into(outs[j], xs, ps[j], stats[j], ctx, compute_dtype)
        if seen is None:
            return None
        return {k: bool(seen >> k & 1) for k in range(len(xs))}

    def _combine_native(
        self,
        lib: Any,
        outs: list[torch.Tensor],
        xs: list[torch.Tensor],
        p: Params,
        stats: dict[int, _InputStats] | None,
        ctx: ChunkCtx,
        lambdas: list[float],
    ) -> int:
        """`_combine` in one C pass (kernels.c's gta_combine), the same float32 operations in the
        same order, one output per lambda. Returns the slots holding NaN or inf, as bits."""
        code = {torch.float32: native.DT_F32, torch.bfloat16: native.DT_BF16}
        shared = p.shared
        ins = (native.GtaInput * (len(xs) - 1))()
        weights = []
        for k in range(1, len(xs)):
            q = p.per_input[k]
            g = ins[k - 1]
            g.x, g.dtype = xs[k].data_ptr(), code[xs[k].dtype]
            w = q.weight  # type: ignore[union-attr]
            weights.append(w)
            g.weight, g.has_weight = w, w != 1.0
            st = stats.get(k) if stats else None
            if st is None:
                continue
            if self.sparsify == "random":
                g.mode = native.M_DARE
                g.dare_key = dare_key(ctx.seed, ctx.name, k)
                g.dare_t = dare_threshold(q.density)  # type: ignore[union-attr]
                g.bits = _address(st.bits)  # None: the kernel draws the mask itself
            else:
                g.mode = native.M_TOP if st.drop_top is None else native.M_OUTLIERS
                g.keep_kind, g.keep_v, g.keep_cut = _kind(st.keep_top, ctx.numel)
                if st.drop_top is not None:
                    g.drop_kind, g.drop_v, g.drop_cut = _kind(st.drop_top, ctx.numel)
            if st.scale != 1.0:
                g.scale, g.has_scale = st.scale, 1
        wsum = sum(weights)
        k = len(outs)
        has = (ctypes.c_int32 * k)(*[int(lam != 1.0) for lam in lambdas])
        lams = (ctypes.c_float * k)(*lambdas)
        ptrs = (ctypes.c_void_p * k)(*[o.data_ptr() for o in outs])
        bad = ctypes.c_uint64(0)
        rc = lib.gta_combine(
            xs[0].data_ptr(), code[xs[0].dtype], ins, len(xs) - 1,
            int(self.elect), int(shared.normalize), int(min(weights) > 0.0), min(weights),  # type: ignore[attr-defined]
            1.0 if abs(wsum) < 1e-8 else wsum, k, has, lams,
            ctx.start, outs[0].numel(), ptrs, code[outs[0].dtype], ctypes.byref(bad),
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"gta_combine failed ({rc})")
        return bad.value

    def _combine(self, xs, p, stats, ctx, scratch: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[no-untyped-def]
        """In place on the fresh input chunks and the 4 scratch tensors of their size:
        d_i = w_i * s_i * mask_i * (x_i - base); the election votes v_i = [d_i * m > 0] with
        m = +1 where sum_i d_i >= 0 else -1 (that is sign(d_i) == m), the mean
        sum_i v_i d_i / sum_i v_i w_i. Each product by a 0/1 mask is exact, so the result is
        bit for bit that of the formula's term-by-term form."""
        base = xs[0]
        shared = p.shared
        tmp, maj, mix, div = scratch
        deltas, weights = [], []
        for i in range(1, len(xs)):
            q = p.per_input[i]
            d = xs[i].sub_(base)
            if stats and i in stats:
                st = stats[i]
                mask = self._mask_f(
                    i, d, ctx.start, ctx, q, st.keep_top, st.drop_top, st.keep, tmp, maj
                )
                d.mul_(mask)
                if st.scale != 1.0:
                    d.mul_(st.scale)
            if q.weight != 1.0:  # type: ignore[union-attr]
                d.mul_(q.weight)  # type: ignore[union-attr]
            deltas.append(d)
            weights.append(q.weight)  # type: ignore[union-attr]
        if self.elect:
            if len(deltas) > 1:
                total = torch.add(deltas[0], deltas[1], out=maj)
            else:
                total = maj.copy_(deltas[0])
            for d in deltas[2:]:
                total.add_(d)
            majority = total.ge_(0.0).mul_(2.0).sub_(1.0)  # +1 where the sum >= 0, else -1
            mixed = mix.zero_()
            divisor = None
            vote = tmp
            for d, w in zip(deltas, weights, strict=True):
                torch.mul(d, majority, out=vote).gt_(0.0)
                mixed.addcmul_(d, vote)
                if shared.normalize:  # type: ignore[attr-defined]
                    if divisor is None:
                        divisor = torch.mul(vote, w, out=div)
                    else:
                        divisor.add_(vote, alpha=w)
            if divisor is not None:
                # 1 where nobody voted. There mixed is +-0 or NaN, which dividing by any
                # positive number leaves as it is: with positive weights, a floor at the
                # smallest weight (a divisor with a voter is at least that) does the same.
                if min(weights) > 0.0:
                    divisor.clamp_min_(min(weights))
                else:
                    divisor.add_(vote.copy_(divisor).eq_(0.0))
        else:
            mixed = deltas[0]
            for d in deltas[1:]:
                mixed.add_(d)
            w = sum(weights)
            divisor = torch.tensor(1.0 if abs(w) < 1e-8 else w, dtype=base.dtype)
        if shared.normalize:  # type: ignore[attr-defined]
            mixed.div_(divisor)
        if shared.lambda_ != 1.0:  # type: ignore[attr-defined]
            mixed.mul_(shared.lambda_)  # type: ignore[attr-defined]
        return mixed.add_(base)


def _locations(read: Reader, slots: list[int]) -> dict[int, early_stats.Loc]:
    """Where the stored bytes of the base and `slots` are, as `early_stats` names them
    (file identity, offset, length, dtype code); empty where the base's are not known."""
    stored_at = getattr(read, "stored_at", None)
    out: dict[int, early_stats.Loc] = {}
    for k in (0, *slots):
        got = stored_at(k) if stored_at is not None else None
        if got is None or got[3] not in _CODES:
            if k == 0:
                return {}
            continue
        st, offset, nbytes, dtype = got
        out[k] = (*early_stats.file_id(st), offset, nbytes, _CODES[dtype])
    return out


def _computed_ahead(read: Reader, sizes: dict[int, list[int]], n: int) -> dict[int, list[Any]]:
    """The top sets `early_stats` computed ahead (while torch was imported) for these inputs,
    where it has every set of an input: the same function of the same bytes as `_scan_tops`
    (looked up by where the bytes are, n and the count), so the same sets."""
    locs = _locations(read, list(sizes))
    out: dict[int, list[Any]] = {}
    for i, counts in sizes.items():
        if i in locs:  # (then the base's too)
            got = [early_stats.take_top(locs[0], locs[i], n, c) for c in counts]
            if all(found for found, _ in got):
                out[i] = [top for _, top in got]
    return out


def _dare_ahead(
    read: Reader, draws: dict[int, tuple[int, int]], n: int
) -> dict[int, tuple[float, float, np.ndarray | None]]:
    """DARE's sums (and keep bits) that `early_stats` computed ahead for the inputs of
    `draws` (slot -> the draw's key and threshold): the same whole-tensor kernel call over the
    same bytes as the merge's own for mapped inputs, so the same sums to the bit."""
    locs = _locations(read, list(draws))
    out = {}
    for i, (key, t) in draws.items():
        if i in locs:  # (then the base's too)
            found, got = early_stats.take_dare(locs[0], locs[i], n, key, t)
            if found:
                out[i] = got
    return out


def _kind(top: TopSet | None, n: int) -> tuple[int, float, int]:
    """A top set as the kernel's (kind, value, cut)."""
    assert top is not None
    if top.everything:
        return native.K_ALL, 0.0, 0
    if top.nothing:
        return native.K_NONE, 0.0, 0
    cut = n if top.all_ties else top.cut
    assert cut is not None
    return native.K_THRESH, top.value, cut


_CODES = {torch.float32: native.DT_F32, torch.bfloat16: native.DT_BF16}


class TaskArithmetic(TaskArithmeticFamily):
    """theta = theta_base + lambda * sum_i w_i (theta_i - theta_base)  (/ sum_i w_i when
    `normalize`); a negative weight subtracts a task; lambda 0 gives the base bit for bit."""

    name = "task_arithmetic"


class Ties(TaskArithmeticFamily):
    """TIES (Yadav et al.): each task vector trimmed to its top-`density` magnitudes, signs
    elected by the weighted sum, the agreeing entries averaged (normalize), times lambda."""

    name = "ties"
    sparsify = "magnitude"
    elect = True
    Shared = TiesShared


class DareLinear(TaskArithmeticFamily):
    """DARE (Yu et al.) + task arithmetic: each task-vector entry kept with probability
    `density` (seeded: `seed`, the tensor name and the input fix the draw), rescaled to keep
    the task vector's L1 norm (`rescale`, as mergekit 0.1.5; in expectation 1/density)."""

    name = "dare_linear"
    sparsify = "random"
    Shared = DareShared


class DareTies(DareLinear):
    """DARE's random drop and rescale, then TIES' sign election and disjoint mean."""

    name = "dare_ties"
    elect = True


class Breadcrumbs(TaskArithmeticFamily):
    """Model Breadcrumbs (Davari & Belilovsky): per task vector the top `gamma` fraction by
    magnitude (outliers) and the smallest are dropped, `density` of the entries kept."""

    name = "breadcrumbs"
    sparsify = "outliers"
    PerInput = BreadcrumbsInput
    grid_per_input = ("weight", "density", "gamma")


class BreadcrumbsTies(Breadcrumbs):
    """Breadcrumbs' sparsification with TIES' sign election."""

    name = "breadcrumbs_ties"
    elect = True
