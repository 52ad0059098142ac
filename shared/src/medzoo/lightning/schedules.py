"""Learning-rate schedules shared by the packages.

:class:`WarmupCosineLR` counts ``scheduler.step()`` calls. Given explicit ``warmup_steps``/``total_steps`` it
is a plain schedule; with ``total_steps=None`` (and optionally ``warmup_epochs``) it follows the trainer:
:func:`follow_trainer` (called from the module's ``configure_optimizers``) derives the total from
``trainer.estimated_stepping_batches``, so ``--trainer.max_steps`` runs anneal over their steps, and from the
trainer's ``Timer``, so ``--trainer.max_time`` runs anneal over their time budget.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

from medzoo.errors import MedzooDataError

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["WarmupCosineLR", "follow_trainer", "trainer_total_steps"]

WARMUP_MODES = ("sequential", "multiply")


class WarmupCosineLR(LambdaLR):
    """Linear warm-up and cosine decay of each parameter group's initial learning rate.

    With ``s`` the number of ``scheduler.step()`` calls so far (epochs when ``scheduler_interval="epoch"``,
    optimizer steps when ``"step"``), ``W = warmup_steps``, ``T = total_steps`` and
    ``warm(s) = warmup_start_factor + (1 - warmup_start_factor) * min(1, s / W)``:

    - ``warmup_mode="sequential"`` (the default): warm up to 1, then run the cosine over the remaining
      ``T - W`` steps::

          s < W:      f = warm(s)
          otherwise:  t = min(1, (s - W) / max(1, T - W)); f = cosine(t)

    - ``warmup_mode="multiply"`` (mmcv's ``CosineAnnealing`` with a linear warm-up): the cosine runs over all
      ``T`` steps and the warm-up multiplies it: ``f = warm(s) * cosine(min(1, s / T))``.

    with ``cosine(t) = min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + cos(pi * t))``. After ``T`` the factor
    stays at ``min_lr_factor``.

    Args:
        optimizer: the wrapped optimizer.
        warmup_steps: length of the linear warm-up in scheduler steps (>= 0).
        total_steps: step at which the cosine reaches ``min_lr_factor`` (>= ``warmup_steps``). ``None``
            follows the trainer: :func:`follow_trainer` sets it (until then the factor is ``warm(s)``).
        warmup_start_factor: factor at step 0, in [0, 1].
        min_lr_factor: final factor, in [0, 1].
        warmup_mode: ``"sequential"`` or ``"multiply"`` (see above).
        warmup_epochs: a warm-up given in epochs instead of steps; :func:`follow_trainer` converts it with
            the trainer's optimizer steps per epoch (used with ``scheduler_interval="step"``).
        anneal_per_epoch: hold the cosine constant within an epoch (mmcv's ``by_epoch=True``: the cosine
            moves once per epoch, the warm-up every step). Needs :func:`follow_trainer` for the epoch length.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        warmup_start_factor: float = 0.0,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
        warmup_mode: Literal["sequential", "multiply"] = "sequential",
        warmup_epochs: float | None = None,
        anneal_per_epoch: bool = False,
    ) -> None:
        if warmup_mode not in WARMUP_MODES:
            raise MedzooDataError("WarmupCosineLR.warmup_mode", repr(warmup_mode), " or ".join(WARMUP_MODES))
        if warmup_steps < 0 or (total_steps is not None and total_steps < warmup_steps):
            raise MedzooDataError(
                "WarmupCosineLR",
                f"warmup_steps={warmup_steps}, total_steps={total_steps}",
                "0 <= warmup_steps <= total_steps",
            )
        if warmup_epochs is not None and warmup_epochs < 0:
            raise MedzooDataError("WarmupCosineLR.warmup_epochs", str(warmup_epochs), "a number >= 0")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.warmup_start_factor = float(warmup_start_factor)
        self.min_lr_factor = float(min_lr_factor)
        self.warmup_mode = warmup_mode
        self.warmup_epochs = None if warmup_epochs is None else float(warmup_epochs)
        self.anneal_per_epoch = bool(anneal_per_epoch)
        self.steps_per_epoch: float | None = None
        self.time_budget_s: float | None = None
        self._clock: Any = None  # () -> elapsed training seconds, set by follow_trainer; never saved
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    # -- the formula ----------------------------------------------------------------------------------------
    def warmup_factor(self, step: int) -> float:
        """The linear warm-up factor after ``step`` steps (1 once the warm-up is over)."""
        if step >= self.warmup_steps:
            return 1.0
        return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps

    def cosine_factor(self, progress: float) -> float:
        """The cosine factor at ``progress`` in [0, 1] of the annealing."""
        progress = min(1.0, max(0.0, progress))
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def progress(self, step: int) -> float | None:
        """Share of the cosine done after ``step`` steps (``None`` while the length is unknown).

        Steps count against ``total_steps``, and time against the trainer's ``max_time`` when it has one;
        the larger share wins, so a run limited by either anneals to ``min_lr_factor`` at its end.
        """
        if self.anneal_per_epoch and self.steps_per_epoch:
            step = math.floor(step / self.steps_per_epoch + 1e-9) * self.steps_per_epoch
        shares = []
        if self.total_steps is not None and math.isfinite(self.total_steps):
            if self.warmup_mode == "sequential":
                shares.append((step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
            else:
                shares.append(step / max(1, self.total_steps))
        if self._clock is not None and self.time_budget_s:
            shares.append(self._clock() / self.time_budget_s)
        return max(shares) if shares else None

    def factor(self, step: int) -> float:
        """The learning-rate factor after ``step`` scheduler steps."""
        warm = self.warmup_factor(step)
        if self.warmup_mode == "sequential" and step < self.warmup_steps:
            return warm
        progress = self.progress(step)
        cosine = 1.0 if progress is None else self.cosine_factor(progress)
        return cosine if self.warmup_mode == "sequential" else warm * cosine

    # -- following the trainer ------------------------------------------------------------------------------
    def bind(
        self,
        total_steps: float,
        steps_per_epoch: float | None = None,
        clock: Any = None,
        time_budget_s: float | None = None,
    ) -> None:
        """Set the lengths the trainer decides (see :func:`follow_trainer`) and refresh the current LR."""
        if self.total_steps is None and math.isfinite(total_steps):
            self.total_steps = int(total_steps)
        self.steps_per_epoch = steps_per_epoch
        if self.warmup_epochs is not None and steps_per_epoch:
            self.warmup_steps = round(self.warmup_epochs * steps_per_epoch)
        if self.total_steps is not None and self.total_steps < self.warmup_steps:
            raise MedzooDataError(
                "WarmupCosineLR",
                f"a warm-up of {self.warmup_steps} steps in a run of {self.total_steps}",
                "a run at least as long as its warm-up (raise max_epochs/max_steps or shorten the warm-up)",
            )
        self._clock, self.time_budget_s = clock, time_budget_s
        if self.total_steps is None and not time_budget_s:
            raise MedzooDataError(
                "WarmupCosineLR(total_steps=None)",
                "a trainer without max_epochs, max_steps or max_time",
                "a run length to anneal over (--trainer.max_epochs, max_steps or max_time)",
            )
        factor = self.factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("_clock", None)  # a live trainer hook, re-made by follow_trainer on resume
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        clock = self._clock
        super().load_state_dict(state_dict)
        self._clock = clock


def trainer_total_steps(trainer: pl.Trainer) -> float:
    """Optimizer steps the trainer will run (``inf`` when only ``max_time`` bounds it)."""
    return float(trainer.estimated_stepping_batches)


def _timer(trainer: pl.Trainer) -> Any:
    from pytorch_lightning.callbacks import Timer

    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


def follow_trainer(optimizers_config: Any, trainer: pl.Trainer | None) -> Any:
    """Bind every :class:`WarmupCosineLR` in a ``configure_optimizers`` result to ``trainer``'s run length.

    - total steps = ``trainer.estimated_stepping_batches`` (``max_epochs`` x steps per epoch, or
      ``max_steps``, whichever ends first; the accumulation of gradients is counted);
    - steps per epoch = that total / ``max_epochs`` (converts ``warmup_epochs``);
    - with ``--trainer.max_time``, the elapsed training time (rank 0's clock, broadcast so that every DDP
      rank uses the same learning rate) also counts as progress.

    Only schedulers stepped per optimizer step (``"interval": "step"``) are bound; explicit ``total_steps``
    are kept. Returns ``optimizers_config`` unchanged, so ``configure_optimizers`` can end with
    ``return follow_trainer(super().configure_optimizers(), self.trainer)``.
    """
    if trainer is None or not isinstance(optimizers_config, dict):
        return optimizers_config
    config = optimizers_config.get("lr_scheduler")
    if not isinstance(config, dict) or not isinstance(config.get("scheduler"), WarmupCosineLR):
        return optimizers_config
    scheduler: WarmupCosineLR = config["scheduler"]
    if config.get("interval", "epoch") != "step":
        if scheduler.total_steps is None or scheduler.warmup_epochs is not None:
            raise MedzooDataError(
                "scheduler_interval",
                "'epoch' with WarmupCosineLR(total_steps=None or warmup_epochs)",
                "'step': the schedule follows the trainer in optimizer steps",
            )
        return optimizers_config
    total = trainer_total_steps(trainer)
    max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    if max_epochs is not None and math.isfinite(total) and trainer.max_steps in (-1, None):
        per_epoch = total / max_epochs
    else:
        if not math.isfinite(trainer.num_training_batches):
            trainer.fit_loop.setup_data()  # max_steps alone: Lightning did not need the loader's length yet
        batches = trainer.num_training_batches
        per_epoch = batches / max(1, trainer.accumulate_grad_batches) if math.isfinite(batches) else None
    timer = _timer(trainer)
    budget = getattr(timer, "_duration", None) if timer is not None else None
    clock = None
    if budget:

        def clock() -> float:
            return float(trainer.strategy.broadcast(timer.time_elapsed("train"), src=0))

    scheduler.bind(total, per_epoch, clock, budget)
    return optimizers_config
