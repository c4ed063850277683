"""Work a command starts before its own module, and torch, are imported: the interpreter
spends 1.5-3 s importing them on one core while the other cores idle. `merge` and
`interpolate` record every source file's SHA-256 (the provenance in the card and the
safetensors metadata); a file not hashed before costs ~0.65 s a GB on a core (OpenSSL with
the SHA extensions, 1.5 GB/s here), and the command's own hashing runs beside its merge.
Started here, the hashing of local safetensors files begins at once (io.hashing.hash_ahead;
the command waits for a file in flight instead of hashing it again), and so do the magnitude
statistics of a `ties` merge (merge/early_stats.py). Best effort: the
arguments are only looked at, never judged; what cannot be read here is left to the command,
which reports it."""

from __future__ import annotations

import contextlib
from pathlib import Path

MAX_CONFIG = 1 << 20  # bytes: a merge config is a few KB; anything larger is not read here
VALUE_FLAGS = {"-o", "--out"}  # the destination: an existing one is no source


def local_weights(ref: str) -> list[Path]:
    """The safetensors files of a local checkpoint reference (a folder, or one file)."""
    p = Path(ref).expanduser()  # as io.reference reads it; never a Hub lookup here
    if p.is_dir():
        return sorted(p.glob("*.safetensors"))
    if p.suffix == ".safetensors" and p.is_file():
        return [p]
    return []


def _read_config(path: Path) -> dict | None:
    """A mergekit config as a mapping, or None (not a small file, not a mapping)."""
    import yaml

    if not path.is_file() or path.stat().st_size > MAX_CONFIG:
        return None
    cfg = yaml.safe_load(path.read_text())
    return cfg if isinstance(cfg, dict) else None


def _config_refs(path: Path) -> list[str]:
    """The model references of a mergekit config: base_model and each model's `model`."""
    cfg = _read_config(path)
    if cfg is None:
        return []
    refs = [cfg.get("base_model")]
    for m in cfg.get("models") or []:
        refs.append(m.get("model") if isinstance(m, dict) else m)
    return [r for r in refs if isinstance(r, str)]


def _density(params: object) -> float | None:
    """A model's (or the config's) scalar density; None where it is absent or not a number
    (a layer gradient, a per-tensor filter: those are left to the merge)."""
    d = params.get("density") if isinstance(params, dict) else None
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def ties_inputs(path: Path) -> tuple[list[Path], list[tuple[list[Path], float]]] | None:
    """The base's files and, per model with a scalar density, its files and density, of a
    local `ties` config; None for anything else (see merge/early_stats.py)."""
    cfg = _read_config(path)
    if cfg is None or cfg.get("merge_method") != "ties":
        return None
    base = cfg.get("base_model")
    base_files = local_weights(base) if isinstance(base, str) else []
    if not base_files:
        return None
    default = _density(cfg.get("parameters"))
    models = []
    for m in cfg.get("models") or []:
        if not isinstance(m, dict) or not isinstance(m.get("model"), str):
            continue
        own = _density(m.get("parameters"))
        d = own if own is not None else default
        files = local_weights(m["model"])
        if d is not None and files and m["model"] != base:
            models.append((files, d))
    return (base_files, models) if models else None


def _words(args: list[str]) -> list[str]:
    """The positional words of a command line after the command (option values skipped)."""
    words, skip = [], False
    for a in args[1:]:
        if a == "--":
            break
        if skip or a.startswith("-"):
            skip = a in VALUE_FLAGS
            continue
        words.append(a)
    return words


def sources(args: list[str]) -> list[Path]:
    """The local weight files a `merge CONFIG` or `interpolate PRE FT` command line names
    (in the order the command hashes them), or none."""
    if not args or args[0] not in ("merge", "interpolate") or "--help" in args:
        return []
    words = _words(args)
    if args[0] == "interpolate":
        return [f for r in words[:2] for f in local_weights(r)]
    refs = _config_refs(Path(words[0])) if words else []
    return [f for r in refs for f in local_weights(r)]


def ties_stats(args: list[str]) -> tuple[list[Path], list[tuple[list[Path], float]]] | None:
    """What `merge/early_stats.py` can compute ahead for the command line: a `merge` of a
    local ties config without a coefficient grid (`--param` may set the densities)."""
    if not args or args[0] != "merge" or "--help" in args:
        return None
    if any(a == "--param" or a.startswith("--param=") for a in args):
        return None
    words = _words(args)
    return ties_inputs(Path(words[0])) if words else None


def start(args: list[str]) -> None:
    """Begin hashing the sources of the command line `args` in the background, and a ties
    merge's statistics (merge/early_stats.py)."""
    with contextlib.suppress(Exception):  # the command reads and judges them itself
        files = sources(args)
        if files:
            from mergekit_sg.io.hashing import hash_ahead

            hash_ahead(files)
    with contextlib.suppress(Exception):
        ties = ties_stats(args)
        if ties is not None:
            from mergekit_sg.merge.early_stats import start_ties

            start_ties(*ties)
