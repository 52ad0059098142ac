"""Learning-rate schedules shared by the packages."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from medzoo.errors import MedzooDataError

__all__ = ["WarmupCosineLR"]


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from ``warmup_start_factor`` to 1, then cosine decay from 1 to ``min_lr_factor``.

    The factor multiplies each parameter group's initial learning rate. With ``s`` the number of
    ``scheduler.step()`` calls so far (epochs when ``scheduler_interval="epoch"``, optimizer steps when
    ``"step"``)::

        s < warmup_steps:   f = warmup_start_factor + (1 - warmup_start_factor) * s / warmup_steps
        otherwise:          t = min(1, (s - warmup_steps) / max(1, total_steps - warmup_steps))
                            f = min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + cos(pi * t))

    After ``total_steps`` the factor stays at ``min_lr_factor``.

    Args:
        optimizer: the wrapped optimizer.
        warmup_steps: length of the linear warm-up (>= 0).
        total_steps: step at which the cosine reaches ``min_lr_factor`` (> ``warmup_steps``, or equal when
            ``warmup_steps`` is 0 ... use ``total_steps >= warmup_steps``).
        warmup_start_factor: factor at step 0, in [0, 1].
        min_lr_factor: final factor, in [0, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        warmup_start_factor: float = 0.0,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0 or total_steps < warmup_steps:
            raise MedzooDataError(
                "WarmupCosineLR",
                f"warmup_steps={warmup_steps}, total_steps={total_steps}",
                "0 <= warmup_steps <= total_steps",
            )
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.warmup_start_factor = float(warmup_start_factor)
        self.min_lr_factor = float(min_lr_factor)
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, step: int) -> float:
        """The learning-rate factor after ``step`` scheduler steps."""
        if step < self.warmup_steps:
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
