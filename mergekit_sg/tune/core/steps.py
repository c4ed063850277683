"""One gradient step, as every loop takes it: backward of the loss divided by the number of
accumulated micro-batches (through the fp16 GradScaler when there is one), then unscale, clip
the gradient norm, optimizer step, scheduler step and zero the gradients (set to None)."""

from __future__ import annotations

import torch


class GradientStep:
    """The optimizer side of a run: `backward(loss)` per micro-batch, `step()` per update."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: list[torch.Tensor],
        scaler: torch.amp.GradScaler | None = None,
        accumulate: int = 1,
        clip: float | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        self.optimizer, self.params, self.scaler = optimizer, params, scaler
        self.accumulate, self.clip, self.scheduler = accumulate, clip, scheduler
        optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of loss / accumulate, added to those of the micro-batches before."""
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()

    def step(self) -> torch.Tensor | None:
        """Clip, step, schedule, zero; the gradient norm before clipping (a tensor, so no host
        sync here), or None without clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm
