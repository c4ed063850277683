"""Fisher-weighted interpolation (Matena & Raffel's Fisher merging of two models, at alpha):

    theta = ((1 - a) F0 theta0 + a F1 theta1) / ((1 - a) F0 + a F1),   F = max(F, floor)

per element, with F0, F1 the diagonal Fishers of the pretrained and the fine-tuned model. Equal
Fishers give plain interpolation; a=0 and a=1 give the endpoints bit for bit. `fisher_lerp` is
the pure math; `execute_fisher` drives it over a validated merge plan and the shard writers, in
place of the linear executor, when `interpolate` is given `fisher=[F0, F1]`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from mergekit_sg.errors import SgMergeError, first_few
from mergekit_sg.io.checkpoint import Checkpoint, open_checkpoint
from mergekit_sg.io.dtypes import itemsize
from mergekit_sg.io.progress import Progress
from mergekit_sg.merge.math import lerp
from mergekit_sg.merge.plan import MergePlan, PlanEntry

DEFAULT_FLOOR = 1e-6


def fisher_lerp(
    theta0: torch.Tensor,
    theta1: torch.Tensor,
    f0: torch.Tensor,
    f1: torch.Tensor,
    alpha: float,
    floor: float = DEFAULT_FLOOR,
    out_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """((1-a) F0 theta0 + a F1 theta1) / ((1-a) F0 + a F1) with F floored, rounded once."""
    out_dtype = out_dtype or theta1.dtype
    if not 0.0 <= alpha <= 1.0:
        raise SgMergeError(f"alpha={alpha:g}: Fisher-weighted interpolation needs 0 <= alpha <= 1")
    if alpha == 0.0:
        return theta0.to(out_dtype, copy=True)
    if alpha == 1.0:
        return theta1.to(out_dtype, copy=True)
    w0 = f0.to(compute_dtype).clamp_min(floor).mul_(1.0 - alpha)
    w1 = f1.to(compute_dtype).clamp_min(floor).mul_(alpha)
    num = w0 * theta0.to(compute_dtype) + w1 * theta1.to(compute_dtype)
    return num.div_(w0.add_(w1)).to(out_dtype)


def _fisher_for(ck: Checkpoint, e: PlanEntry, src: str) -> torch.Tensor | None:
    for name in (e.name, src):
        if name in ck.tensors:
            info = ck.tensors[name]
            if tuple(info.shape) != tuple(e.shape):
                raise SgMergeError(
                    f"--fisher {ck.ref}: {name!r} has shape {list(info.shape)}, "
                    f"the weights {list(e.shape)}"
                )
            return ck.read(name)
    return None


def execute_fisher(
    plan: MergePlan,
    pre: Checkpoint,
    ft: Checkpoint,
    fisher: Sequence[str | Path],
    floor: float,
    writers: Sequence,
    device: str,
    progress: Progress,
) -> list[str]:
    """Write every output tensor of `plan` with Fisher weighting (one writer per alpha).
    Floating tensors without a Fisher entry (buffers) are interpolated linearly; their names
    are returned and warned about."""
    if len(fisher) != 2:
        raise SgMergeError("--fisher takes two files: F_PRETRAINED,F_FINETUNED")
    bad = [a for a in plan.alphas if not 0.0 <= a <= 1.0]
    bad += [a for e in plan.entries for a in e.rule.alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise SgMergeError(f"alpha={bad[0]:g}: Fisher-weighted interpolation needs 0 <= alpha <= 1")
    linear: list[str] = []
    total = sum(e.numel * itemsize(e.out_dtype) for e in plan.entries) * len(writers)
    with open_checkpoint(fisher[0]) as f0, open_checkpoint(fisher[1]) as f1:
        progress.start("fisher-merge", len(plan.entries), total)
        try:
            for e in plan.entries:
                if e.rule.kind == "copy":
                    src = pre.read(e.src_pre) if e.rule.side == "pretrained" else ft.read(e.src_ft)
                    out = src.to(e.out_dtype).contiguous().cpu()
                    for w in writers:
                        w.write(e.name, out)
                    progress.advance(1, out.numel() * itemsize(e.out_dtype) * len(writers))
                    continue
                a = pre.read(e.src_pre).to(device)
                b = ft.read(e.src_ft).to(device)
                g0, g1 = _fisher_for(f0, e, e.src_pre), _fisher_for(f1, e, e.src_ft)
                if g0 is None or g1 is None:
                    linear.append(e.name)
                for w, alpha in zip(writers, e.rule.alphas, strict=True):
                    if g0 is None or g1 is None:
                        merged = lerp(a, b, alpha, e.out_dtype, plan.compute_dtype)
                    else:
                        merged = fisher_lerp(
                            a,
                            b,
                            g0.to(device),
                            g1.to(device),
                            alpha,
                            floor,
                            e.out_dtype,
                            plan.compute_dtype,
                        )
                    w.write(e.name, merged.contiguous().cpu())
                progress.advance(1, e.numel * itemsize(e.out_dtype) * len(writers))
        finally:
            progress.finish()
    if linear:
        warnings.warn(
            f"{len(linear)} tensor(s) have no Fisher entry and were interpolated linearly: "
            f"{first_few(linear)}",
            stacklevel=2,
        )
    return linear
