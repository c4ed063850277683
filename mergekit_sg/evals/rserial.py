"""A minimal reader for R's serialisation format (XDR, versions 2 and 3) and R's lazy-load
databases (`Rdata.rdx` index + `Rdata.rdb` blobs, as installed R packages ship their data),
enough to read data frames of numbers, strings and factors with the standard library alone.

Why not the `rdata` package: it pulls pandas and xarray in; this is the 150 lines we need."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergekit_sg.errors import SgMergeError

NILVALUE, REF, GLOBALENV, UNBOUND, MISSINGARG, BASENS = 254, 255, 253, 252, 251, 250
NAMESPACE, PACKAGE, PERSIST, EMPTYENV, BASEENV, ALTREP = 249, 248, 247, 242, 241, 238
ATTRLANG, ATTRLIST = 240, 239
SYM, LIST, CLO, ENV, PROM, LANG, CHAR = 1, 2, 3, 4, 5, 6, 9
LGL, INT, REAL, CPLX, STR, DOT, VEC, EXPR, BCODE, RAW = 10, 13, 14, 15, 16, 17, 19, 20, 21, 24
NA_INT = -(2**31)


@dataclass
class RObj:
    """An R value: `values` (list for vectors, dict for pairlists) and its attributes."""

    type: int
    values: Any
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RSym:
    name: str


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.b, self.pos, self.refs, self.where = data, 0, [], where

    def fail(self, what: str) -> SgMergeError:
        return SgMergeError(f"{self.where}: unsupported or corrupt R data ({what})")

    def i32(self) -> int:
        (v,) = struct.unpack_from(">i", self.b, self.pos)
        self.pos += 4
        return v

    def i32s(self, n: int) -> list[int]:
        out = list(struct.unpack_from(f">{n}i", self.b, self.pos))
        self.pos += 4 * n
        return out

    def f64s(self, n: int) -> list[float]:
        out = list(struct.unpack_from(f">{n}d", self.b, self.pos))
        self.pos += 8 * n
        return out

    def length(self) -> int:
        n = self.i32()
        if n == -1:
            hi, lo = self.i32(), self.i32()
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        if self.b[:2] != b"X\n":
            raise self.fail("only the XDR binary format is read")
        self.pos = 2
        version = self.i32()
        self.i32(), self.i32()
        if version == 3:
            n = self.i32()  # then the native encoding's name
            self.pos += n
        elif version != 2:
            raise self.fail(f"serialisation version {version}")

    def item(self) -> Any:
        flags = self.i32()
        t, has_attr, has_tag = flags & 0xFF, bool(flags & 512), bool(flags & 1024)
        if t == NILVALUE:
            return None
        if t in (GLOBALENV, UNBOUND, MISSINGARG, BASENS, EMPTYENV, BASEENV):
            return RObj(t, None)
        if t == REF:
            idx = flags >> 8 or self.i32()
            return self.refs[idx - 1]
        if t in (NAMESPACE, PACKAGE, PERSIST):
            if self.i32() != 0:
                raise self.fail("persistent name")
            obj = RObj(t, [self.item() for _ in range(self.i32())])
            self.refs.append(obj)
            return obj
        if t == SYM:
            sym = RSym(self.item())
            self.refs.append(sym)
            return sym
        if t == ENV:
            env = RObj(ENV, {})
            self.refs.append(env)
            self.i32()  # locked
            env.values = {"enclos": self.item(), "frame": self.item(), "hash": self.item()}
            env.attrs = _attr_dict(self.item())
            return env
        if t in (LIST, LANG, CLO, PROM, DOT, ATTRLANG, ATTRLIST):
            attrs = _attr_dict(self.item()) if has_attr else {}
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            cell = RObj(t, [(tag.name if isinstance(tag, RSym) else None, car)], attrs)
            if isinstance(cdr, RObj) and cdr.type in (LIST, ATTRLIST):
                cell.values.extend(cdr.values)
            return cell
        if t == CHAR:
            n = self.i32()
            if n == -1:
                return None
            s = self.b[self.pos : self.pos + n]
            self.pos += n
            return s.decode("latin-1" if flags & (1 << 14) else "utf-8", errors="replace")
        if t == ALTREP:
            return self.altrep()
        if t in (LGL, INT):
            n = self.length()
            vals: Any = [None if v == NA_INT else v for v in self.i32s(n)]
        elif t == REAL:
            vals = self.f64s(self.length())
        elif t == CPLX:
            d = self.f64s(2 * self.length())
            vals = [complex(d[i], d[i + 1]) for i in range(0, len(d), 2)]
        elif t in (STR, VEC, EXPR):
            vals = [self.item() for _ in range(self.length())]
        elif t == RAW:
            n = self.length()
            vals = self.b[self.pos : self.pos + n]
            self.pos += n
        else:
            raise self.fail(f"SEXP type {t}")
        return RObj(t, vals, _attr_dict(self.item()) if has_attr else {})

    def altrep(self) -> RObj:
        info, state, attr = self.item(), self.item(), self.item()
        cls = info.values[0][1].name if isinstance(info, RObj) else "?"
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = state.values
            vals = [start + i * step for i in range(int(n))]
            out = RObj(INT if cls == "compact_intseq" else REAL, [int(v) for v in vals])
        elif cls.startswith("wrap_"):
            out = RObj(state.values[0].type, state.values[0].values)
        elif cls == "deferred_string":
            arg = state.values[0][1]
            out = RObj(STR, [None if v is None else str(v) for v in arg.values])
        else:
            raise self.fail(f"ALTREP class {cls}")
        out.attrs = _attr_dict(attr)
        return out


def _attr_dict(pairlist: Any) -> dict[str, Any]:
    if not isinstance(pairlist, RObj):
        return {}
    return {k: v for k, v in pairlist.values if k is not None}


def unserialize(data: bytes, where: str = "R data") -> Any:
    """One R object from serialised bytes (already decompressed)."""
    r = _Reader(data, where)
    r.header()
    try:
        return r.item()
    except struct.error:
        raise r.fail("truncated") from None


def _lazyload_blob(rdb: bytes, offset: int, size: int, where: str) -> bytes:
    """R_decompress1/2/3: a 4-byte big-endian length, then zlib, or a type byte
    ('Z' xz, '2' bzip2, '1' zlib, '0' stored) and the data."""
    blob = rdb[offset : offset + size]
    n = struct.unpack(">I", blob[:4])[0]
    kind = blob[4:5]
    if kind == b"Z":
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
        out = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters).decompress(blob[5:])
    elif kind == b"2":
        out = bz2.decompress(blob[5:])
    elif kind == b"1":
        out = zlib.decompress(blob[5:])
    elif kind == b"0":
        out = blob[5:]
    else:
        out = zlib.decompress(blob[4:])
    if len(out) != n:
        raise SgMergeError(f"{where}: corrupt lazy-load entry (size {len(out)} != {n})")
    return out


def read_lazyload(rdx: Path, names: list[str]) -> dict[str, Any]:
    """The named objects of an R lazy-load database (`X.rdx` with `X.rdb` beside it)."""
    where = str(rdx)
    raw = rdx.read_bytes()
    index = unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw, where)
    variables = _named(_named(index)["variables"])
    rdb = rdx.with_suffix(".rdb").read_bytes()
    out = {}
    for name in names:
        if name not in variables:
            raise SgMergeError(f"{where}: no object {name!r} (have {', '.join(sorted(variables))})")
        offset, size = (int(v) for v in variables[name].values)
        out[name] = unserialize(_lazyload_blob(rdb, offset, size, where), where)
    return out


def _named(obj: RObj) -> dict[str, Any]:
    """An R named list as a dict."""
    names = obj.attrs.get("names")
    if names is None:
        raise SgMergeError("R list without names")
    return dict(zip(names.values, obj.values, strict=True))


def data_frame(obj: RObj, where: str) -> dict[str, list[Any]]:
    """A data.frame/tibble as {column: values}, factors turned into their level strings."""
    if not isinstance(obj, RObj) or obj.type != VEC or "names" not in obj.attrs:
        raise SgMergeError(f"{where}: not a data frame")
    out = {}
    for name, col in _named(obj).items():
        levels = col.attrs.get("levels")
        if levels is not None:
            out[name] = [None if v is None else levels.values[v - 1] for v in col.values]
        else:
            out[name] = list(col.values)
    return out
