"""Learning-rate schedules and the order of the examples, each a pure function of its arguments
(so a resumed run sees the same rates and batches)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Per optimizer step: linear warm-up over `warmup` steps, (step + 1) / warmup, then
    cosine 0.5 (1 + cos(pi p)), linear 1 - p, or constant 1, with p = (step - warmup) /
    (total - warmup)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_lr(epoch: int, epochs: int, lr: float, warmup_epochs: int, warmup_lr: float) -> float:
    """Per epoch (as CoOp steps its scheduler): `warmup_lr` for the warm-up epochs, then
    0.5 lr (1 + cos(pi (epoch - warmup) / (epochs - warmup)))."""
    if epoch < warmup_epochs:
        return warmup_lr
    rest = max(1, epochs - warmup_epochs)
    return 0.5 * lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / rest))


def set_lr(optimizer: torch.optim.Optimizer, rate: float) -> None:
    """Every parameter group of `optimizer` at `rate`."""
    for group in optimizer.param_groups:
        group["lr"] = rate


def epoch_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = False
) -> list[list[int]]:
    """The batches of one epoch, a function of the seed and the epoch only: a random
    permutation cut into batches; with `group_by_length`, each run of 50 batches' worth of
    examples is sorted by length before cutting (less padding), and the batches shuffled."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = 50 * batch_size
    batches = []
    for s in range(0, len(order), mega):
        chunk = sorted(order[s : s + mega], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
