"""Work a command starts before its own module, and torch, are imported: the interpreter
spends 1.5-3 s importing them on one core while the other cores idle. `merge` and
`interpolate` record every source file's SHA-256 (the provenance in the card and the
safetensors metadata); a file not hashed before costs ~0.65 s a GB on a core (OpenSSL with
the SHA extensions, 1.5 GB/s here), and the command's own hashing runs beside its merge.
Started here, the hashing of local safetensors files begins at once (io.hashing.hash_ahead;
the command waits for a file in flight instead of hashing it again), and so do the magnitude
statistics of a `ties` merge and the rescale sums of a `dare_ties` or `dare_linear` merge
(merge/early_stats.py). Best effort: the
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


def _models(cfg: dict | None, methods: tuple[str, ...]) -> tuple[list[Path], list] | None:
    """(the base's files, per model other than the base: its slot as the merge numbers it
    (1.. in config order), its files or [], its scalar density or None) of a config of one
    of `methods` with a local base; None for anything else."""
    if cfg is None or cfg.get("merge_method") not in methods:
        return None
    base = cfg.get("base_model")
    base_files = local_weights(base) if isinstance(base, str) else []
    if not base_files:
        return None
    default = _density(cfg.get("parameters"))
    models, slot = [], 0
    for m in cfg.get("models") or []:
        ref = m.get("model") if isinstance(m, dict) else m
        if not isinstance(ref, str):
            return None  # a long form: the merge numbers its slots, not this guess
        if ref == base:
            continue
        slot += 1
        own = _density(m.get("parameters")) if isinstance(m, dict) else None
        models.append((slot, local_weights(ref), own if own is not None else default))
    return base_files, models


def _ties(cfg: dict | None) -> tuple[list[Path], list[tuple[list[Path], float]]] | None:
    got = _models(cfg, ("ties",))
    if got is None:
        return None
    base, models = got
    out = [(files, d) for _, files, d in models if files and d is not None]
    return (base, out) if out else None


def _dare(
    cfg: dict | None,
) -> tuple[list[Path], list[tuple[list[Path], tuple[int, float]]], int] | None:
    got = _models(cfg, ("dare_ties", "dare_linear"))
    if got is None or cfg is None:
        return None
    base, models = got
    params = cfg.get("parameters")
    rescale = params.get("rescale", True) if isinstance(params, dict) else True
    seed = cfg.get("seed", 0)
    if rescale is not True or type(seed) is not int:  # no sums to compute, or not our seed
        return None
    out = [(files, (slot, d)) for slot, files, d in models if files and d is not None]
    return (base, out, seed) if out else None


def ties_inputs(path: Path) -> tuple[list[Path], list[tuple[list[Path], float]]] | None:
    """The base's files and, per model with a scalar density, its files and density, of a
    local `ties` config; None for anything else (see merge/early_stats.py)."""
    return _ties(_read_config(path))


def dare_inputs(
    path: Path,
) -> tuple[list[Path], list[tuple[list[Path], tuple[int, float]]], int] | None:
    """The base's files, per model with a scalar density its files and (slot, density), and
    the seed, of a local `dare_ties` or `dare_linear` config that rescales (the default);
    None for anything else (see merge/early_stats.py)."""
    return _dare(_read_config(path))


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


def _merge_config(args: list[str]) -> Path | None:
    """The config of a `merge` command line whose statistics can be computed ahead: no
    coefficient grid (`--param` may set the densities)."""
    if not args or args[0] != "merge" or "--help" in args:
        return None
    if any(a == "--param" or a.startswith("--param=") for a in args):
        return None
    words = _words(args)
    return Path(words[0]) if words else None


def ties_stats(args: list[str]) -> tuple[list[Path], list[tuple[list[Path], float]]] | None:
    """What `merge/early_stats.py` can compute ahead for a `merge` of a local ties config."""
    path = _merge_config(args)
    return ties_inputs(path) if path is not None else None


def dare_stats(
    args: list[str],
) -> tuple[list[Path], list[tuple[list[Path], tuple[int, float]]], int] | None:
    """What `merge/early_stats.py` can compute ahead for a `merge` of a local DARE config."""
    path = _merge_config(args)
    return dare_inputs(path) if path is not None else None


def start(args: list[str]) -> None:
    """Begin hashing the sources of the command line `args` in the background, and a ties or
    DARE merge's statistics (merge/early_stats.py)."""
    with contextlib.suppress(Exception):  # the command reads and judges them itself
        files = sources(args)
        if files:
            from mergekit_sg.io.hashing import hash_ahead

            hash_ahead(files)
    with contextlib.suppress(Exception):
        path = _merge_config(args)
        cfg = _read_config(path) if path is not None else None  # read once for both
        ties, dare = _ties(cfg), _dare(cfg)
        if ties is not None:
            from mergekit_sg.merge.early_stats import start_ties

            start_ties(*ties)
        elif dare is not None:
            from mergekit_sg.merge.early_stats import start_dare

            start_dare(*dare)
