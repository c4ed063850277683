"""GGUF files (llama.cpp's format, float or quantised) read as a lazy checkpoint with Hugging
Face names, config and tokenizer, exactly as transformers loads them.

At open only the header is parsed (gguf's `GGUFReader` maps the file): every tensor's name,
shape and type is known, nothing is dequantised. A tensor is dequantised when it is read, with
the `gguf` package's own `dequantize` (the function transformers calls), then undergoes the same
per-architecture fix-up transformers applies (for Llama, the reversal of llama.cpp's q/k
row permutation: rows of each head are stored as (2, d/2) interleaved pairs; HF wants (d/2, 2)),
and is cast once to the requested dtype (float32 by default, which is what dequantisation
yields, so the values are transformers' bit for bit).

Names: GGUF calls a tensor `blk.N.attn_q.weight`; the HF name (`model.layers.N.self_attn.
q_proj.weight`) is found as transformers finds it, by mapping every parameter of the model class
(built on the meta device, so no memory) through gguf's tensor-name map.

Config and tokenizer are built from the GGUF metadata by transformers (`gguf_file=`) and saved
once as side files in a cache folder keyed by the file's identity, so a merged output carries
config.json and the tokenizer and loads with `AutoModelForCausalLM.from_pretrained(OUT)`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergekit_sg.errors import SgMergeError
from mergekit_sg.io.lazy import Checkpoint, TensorInfo
from mergekit_sg.io.reference import Resolved

MAGIC = b"GGUF"
NAMES_FILE = "sgmerge_gguf_names.json"
SUFFIX = ".gguf"


def is_gguf(path: Path) -> bool:
    """A file that starts with the GGUF magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = "gguf" if module == "gguf" else "transformers"
        raise SgMergeError(
            f"reading GGUF files needs the {module} package: pip install 'mergekit-sg[{extra}]'"
        ) from None


def cache_root() -> Path:
    """The toolkit's cache folder ($MERGEKIT_SG_CACHE, else ~/.cache/mergekit-sg)."""
    root = os.environ.get("MERGEKIT_SG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mergekit-sg"
    )
    return Path(root)


class _Reader:
    """gguf's GGUFReader over a plain ndarray view of its memory map: the same parse and the
    same tensor bytes, without numpy.memmap's per-slice overhead (2x faster to open)."""

    @staticmethod
    def open(path: Path) -> Any:
        import gguf
        import numpy as np

        class Reader(gguf.GGUFReader):
            def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None):
                if type(self.data) is np.memmap:
                    self._mm = self.data
                    self.data = self.data.view(np.ndarray)
                return super()._get(offset, dtype, count, override_order)

        return Reader(str(path), "r")


_READERS: dict[str, Any] = {}
_READERS_LOCK = threading.Lock()


def _stat_key(path: Path) -> str:
    st = path.resolve().stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def reader_for(path: Path) -> Any:
    """One parsed reader per file (and version of it) per process: the header of a large
    vocabulary takes seconds to parse, and scans open the same file several times."""
    _need("gguf")
    key = _stat_key(path)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            try:
                reader = _Reader.open(path)
            except (ValueError, OSError, IndexError, KeyError) as e:
                raise SgMergeError(f"{path}: not a readable GGUF file ({e})") from None
            _READERS.clear()  # keep the latest few files' maps only
            _READERS[key] = reader
        return reader


def _skeleton(config: Any) -> torch.nn.Module:
    """The model class transformers would load this config into, on the meta device: the
    causal-LM class when the architecture has one, else the bare model."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    auto = (
        transformers.AutoModelForCausalLM
        if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        else transformers.AutoModel
    )
    with torch.device("meta"):
        return auto.from_config(config)


@dataclass
class GgufLayout:
    """How each GGUF tensor becomes a Hugging Face one: its HF name, index in the reader,
    and the architecture's tensor processor (q/k permutation for Llama)."""

    names: dict[str, int]  # HF name -> index into reader.tensors
    processor: Any


def layout(reader: Any, path: Path, side: Path) -> GgufLayout:
    """Map the file's tensors to HF names exactly as transformers' `load_gguf_checkpoint`:
    gguf's name map over the parameters of the model class, then the architecture's tensor
    processor (configured with the config transformers built) on each dequantised tensor."""
    from transformers import AutoConfig

    mod = _need("transformers.modeling_gguf_pytorch_utils")
    arch = str(_field(reader, "general.architecture") or "")
    config = AutoConfig.from_pretrained(side)
    cfg = config.to_dict()
    processor = mod.TENSOR_PROCESSORS.get(arch, mod.TensorProcessor)(config=cfg)
    if arch in ("qwen2moe", "qwen3moe", "gpt_oss", "minimax-m2") or _new_loader(arch):
        raise SgMergeError(
            f"{path}: GGUF architecture {arch!r} is not read lazily yet (its experts are "
            "re-stacked across tensors); convert it with transformers first"
        )
    mapping = _name_map(side, config, processor, path, arch)
    names: dict[str, int] = {}
    for i, t in enumerate(reader.tensors):
        hf = mapping.get(t.name)
        if hf is None:
            continue  # transformers skips these too (e.g. rope frequency tables)
        names[hf] = i
    if not names:
        raise SgMergeError(f"{path}: no tensor of this GGUF file maps to a {arch} model")
    return GgufLayout(names, processor)


def _name_map(side: Path, config: Any, processor: Any, path: Path, arch: str) -> dict[str, str]:
    """GGUF name -> HF name from transformers' `get_gguf_hf_weights_map` (slow: it rebuilds
    gguf's name table for every submodule), kept in the side folder per transformers version."""
    import transformers

    mod = _need("transformers.modeling_gguf_pytorch_utils")
    stored = side / NAMES_FILE
    try:
        saved = json.loads(stored.read_text())
        if saved.get("transformers") == transformers.__version__:
            return dict(saved["names"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    try:
        mapping = mod.get_gguf_hf_weights_map(_skeleton(config), processor)
    except NotImplementedError as e:
        raise SgMergeError(f"{path}: GGUF architecture {arch!r} not supported ({e})") from None
    record = {"transformers": transformers.__version__, "names": mapping}
    try:
        tmp = stored.with_name(f".{NAMES_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, stored)
    except OSError:
        pass  # a read-only cache only costs the map again next time
    return mapping


def _new_loader(arch: str) -> bool:
    """Architectures transformers loads by its newer GGUF conversion path (not followed here)."""
    try:
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    except ImportError:
        return False
    return arch in GGUF_CONFIG_ARCHS


def _field(reader: Any, key: str) -> Any:
    from transformers.modeling_gguf_pytorch_utils import read_field

    value = read_field(reader, key)
    return value[0] if value else None


def side_files_dir(path: Path) -> Path:
    """config.json and tokenizer files built by transformers from the GGUF metadata, saved once
    per file (keyed by path, size, mtime) in the cache and reused."""
    digest = hashlib.sha256(_stat_key(path).encode()).hexdigest()[:20]
    target = cache_root() / "gguf" / f"{path.stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".side-"))
    try:
        write_side_files(path, tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_side_files(path: Path, out: Path) -> None:
    """config.json (with the architecture transformers' causal-LM class gives it and the dtype
    the tensors are read in) and the tokenizer, both as transformers builds them from GGUF."""
    _need("gguf")
    transformers = _need("transformers")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    transformers.utils.logging.disable_progress_bar()
    config = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if not getattr(config, "architectures", None):
        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        if arch:
            config.architectures = [arch]
    config.dtype = torch.float32
    config.save_pretrained(out)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError, OSError, NotImplementedError):
        return  # a GGUF file without a tokenizer: weights and config only
    tok.save_pretrained(out)


@dataclass
class GgufCheckpoint(Checkpoint):
    """A GGUF file as a lazy checkpoint: tensors dequantised one at a time on read."""

    dtype: torch.dtype = torch.float32
    _reader: Any = field(default=None, repr=False)
    _layout: GgufLayout | None = field(default=None, repr=False)
    _last: tuple[str, torch.Tensor] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _side: Path | None = field(default=None, repr=False)

    @property
    def side_dir(self) -> Path | None:
        """The cached config/tokenizer folder built from the GGUF metadata."""
        if self._side is None:
            self._side = side_files_dir(self.source.path)
        return self._side

    @property
    def kind(self) -> str:
        return "transformers"

    def read(self, name: str) -> torch.Tensor:
        """The tensor dequantised as transformers does, in `self.dtype` (a fresh tensor)."""
        import gguf
        import numpy as np

        assert self._layout is not None
        t = self._reader.tensors[self._layout.names[name]]
        weights = gguf.dequantize(t.data, t.tensor_type)
        weights = self._layout.processor.process(weights=weights, name=t.name).weights
        out = torch.from_numpy(np.copy(weights))
        expect = self.tensors[name].shape
        if tuple(out.shape) != expect:
            raise SgMergeError(
                f"{self.source.path}: tensor {t.name} dequantised to {tuple(out.shape)}, "
                f"expected {expect}"
            )
        return out.to(self.dtype)

    def read_flat(
        self, name: str, start: int, count: int, scratch: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Elements [start, start+count) of the flat tensor; the tensor being read in chunks
        is dequantised once and kept until another is asked for."""
        with self._lock:
            if self._last is None or self._last[0] != name:
                self._last = (name, self.read(name).reshape(-1))
            flat = self._last[1]
        return flat[start : start + count]

    def close(self) -> None:
        """Drops this view's tensors; the process-wide reader keeps the file mapped."""
        self._last = None
        self._reader = None


def open_gguf(resolved: Resolved, dtype: torch.dtype = torch.float32) -> GgufCheckpoint:
    """Open a GGUF file: header and tensor table only; HF names, shapes, `dtype` per tensor."""
    path = resolved.path
    reader = reader_for(path)
    side = side_files_dir(path)
    lay = layout(reader, path, side)
    tensors: dict[str, TensorInfo] = {}
    for hf, i in lay.names.items():
        t = reader.tensors[i]
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        tensors[hf] = TensorInfo(hf, shape, dtype, 0, -1, t.name)
    meta = {"format": "gguf", "gguf.architecture": str(_field(reader, "general.architecture"))}
    name = _field(reader, "general.name")
    if name:
        meta["gguf.name"] = str(name)
    ck = GgufCheckpoint(resolved, "gguf", [path], tensors, {}, meta, dtype=dtype)
    ck._reader, ck._layout, ck._side = reader, lay, side
    return ck
