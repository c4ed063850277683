"""`LinearPath`: one live model moved to any point between two endpoints, in place.

Both endpoints are kept once, in their stored dtype, on the model's device; setting alpha
writes `theta_a + alpha * (theta_b - theta_a)` into the live parameters with the same kernel as
`interpolate` (float32 arithmetic, rounded once), so the live model at alpha is bit-identical to
loading interpolate's output. Each alpha is computed from the endpoints, never by stepping, so
there is no drift; nothing is allocated per alpha beyond one tensor's scratch.

`side_weights` names weight files beside a checkpoint directory that hold some of the model's
tensors (`LoadedModel.side_weights`: an open_clip classifier's classifier_head.safetensors);
each endpoint's tensors are looked up in the checkpoint, then in those files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.io.checkpoint import Checkpoint, open_checkpoint
from mergekit_sg.merge.math import lerp_into


def live_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's floating parameters and persistent buffers by state-dict name, tied
    tensors once (under their first name)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in module.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            continue
        key = t.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def _sources(src: str | Path | Checkpoint, side_weights: tuple[str, ...]) -> list[Checkpoint]:
    """The checkpoint, then each side weight file found beside it (a directory's)."""
    ck = open_checkpoint(src)
    out = [ck]
    try:
        side = ck.side_dir
        for name in side_weights:
            if side is not None and (side / name).is_file():
                out.append(open_checkpoint(side / name))
    except BaseException:
        for c in out:
            c.close()
        raise
    return out


def _endpoint(
    src: str | Path | Checkpoint | Mapping[str, torch.Tensor],
    names: list[str],
    device: torch.device,
    side_weights: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The endpoint's tensors for `names`, on `device`, read once (from the checkpoint or a
    side weight file beside it)."""
    cks: list[Checkpoint] = []
    where: dict[str, tuple[Checkpoint, str]] = {}
    if isinstance(src, Mapping):
        have = set(src)
    else:
        cks = _sources(src, side_weights)
        for c in reversed(cks):  # the checkpoint's own tensors win
            for n in [*c.tensors, *c.aliases]:
                where[n] = (c, c.aliases.get(n, n))
        have = set(where)

    try:
        missing = [n for n in names if n not in have]
        if missing:
            at = getattr(src, "ref", src) if not isinstance(src, Mapping) else "endpoint"
            hint = ""
            if side_weights and len(cks) == 1:
                hint = f" (there is no {' or '.join(side_weights)} beside it)"
            raise SgMergeError(
                f"{at}: lacks {len(missing)} tensor(s) of the model: {first_few(missing)}{hint}"
            )
        out = {}
        for n in names:
            if isinstance(src, Mapping):
                t, fresh = src[n].detach(), False
            else:
                c, stored = where[n]
                # a safetensors read is already a fresh tensor we own; mapped tensors are
                # copied so the endpoint cannot change under the path
                t, fresh = c.read(stored).detach(), c.tensors[stored].offset >= 0
            moved = t.to(device).contiguous()
            out[n] = moved if fresh or moved.data_ptr() != t.data_ptr() else moved.clone()
        return out
    finally:
        for c in cks:
            c.close()


class LinearPath:
    """Move a live model along theta(alpha) = (1 - alpha) * theta_a + alpha * theta_b."""

    def __init__(
        self,
        module: torch.nn.Module,
        theta_a: str | Path | Checkpoint | Mapping[str, torch.Tensor],
        theta_b: str | Path | Checkpoint | Mapping[str, torch.Tensor],
        names: list[str] | None = None,
        compute_dtype: torch.dtype = torch.float32,
        rename: Callable[[str], str] | None = None,
        side_weights: tuple[str, ...] = (),
    ) -> None:
        self.module = module
        live = live_tensors(module)
        if names is not None:
            live = {n: live[n] for n in names}
        rename = rename or (lambda n: n)
        self.live = {rename(n): t for n, t in live.items()}  # keyed by checkpoint name
        dev = next(iter(self.live.values())).device if self.live else torch.device("cpu")
        keys = list(self.live)
        self.a = _endpoint(theta_a, keys, dev, side_weights)
        self.b = _endpoint(theta_b, keys, dev, side_weights)
        bad = [
            n
            for n in keys
            if self.a[n].shape != self.live[n].shape or self.b[n].shape != self.live[n].shape
        ]
        if bad:
            raise SgMergeError(f"endpoint shapes do not fit the model: {first_few(bad)}")
        self.compute_dtype = compute_dtype
        self.alpha: float | None = None

    @torch.no_grad()
    def set(self, alpha: float) -> torch.nn.Module:
        """Put the live model at `alpha` (0 = theta_a, 1 = theta_b) and return it."""
        for n, t in self.live.items():
            lerp_into(
                t.data.view(-1), self.a[n].view(-1), self.b[n].view(-1), alpha, self.compute_dtype
            )
        self.alpha = alpha
        return self.module

    def endpoint_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.a, self.b) for t in d.values())


def lambda_path(
    module: torch.nn.Module,
    config: object,
    point: Mapping[str, float] | None = None,
    names: list[str] | None = None,
    rename: Callable[[str], str] | None = None,
) -> LinearPath:
    """A `LinearPath` along a task-vector merge's lambda: `set(lam)` puts the live model at
    theta_base + lam * delta (the merge of `config` at lambda = lam, up to float32 rounding),
    the merged task vector delta computed once (merge/memory.py), so each lambda costs a
    WiSE-FT scan point. `point` sets the other coefficients (density, weights)."""
    from mergekit_sg.merge.memory import lambda_endpoints

    rename = rename or (lambda n: n)
    keys = [rename(n) for n in (names or list(live_tensors(module)))]
    base, merged = lambda_endpoints(config, point, keys)  # type: ignore[arg-type]
    return LinearPath(module, base, merged, names=names, rename=rename)


def read_tensors(
    src: str | Path | Checkpoint,
    names: list[str],
    device: torch.device | str = "cpu",
    side_weights: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The tensors `names` of a checkpoint (side weight files beside it included), read once
    onto `device` in their stored dtype: a candidate of an in-memory soup."""
    return _endpoint(src, names, torch.device(device), side_weights)


def checkpoint_names(
    module: torch.nn.Module, rename: Callable[[str], str] | None = None
) -> list[str]:
    """The checkpoint names of the module's live floating tensors (tied ones once)."""
    rename = rename or (lambda n: n)
    return [rename(n) for n in live_tensors(module)]


@torch.no_grad()
def load_live(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    rename: Callable[[str], str] | None = None,
) -> torch.nn.Module:
    """Copy `state` (keyed by checkpoint name) into the live module in place, cast to each
    parameter's dtype: the live model becomes that state without rebuilding it."""
    rename = rename or (lambda n: n)
    for n, t in live_tensors(module).items():
        t.data.copy_(state[rename(n)])
    return module
