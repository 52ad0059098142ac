"""The base LightningModule of every package."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable, ReduceLROnPlateau

from medzoo.errors import MedzooDataError, MedzooTrainingError
from medzoo.lightning.schedules import follow_trainer

if TYPE_CHECKING:
    from medzoo.lightning.predict import PredictionWriter

__all__ = ["MedzooModule"]


class MedzooModule(pl.LightningModule):
    """Base LightningModule of every medzoo package: optimizer/scheduler from config, NaN guard, export.

    Subclasses hold the model, the losses and the steps. They accept ``optimizer`` and ``scheduler`` in their
    own ``__init__`` (typed ``OptimizerCallable`` / ``LRSchedulerCallable`` so LightningCLI builds them from
    YAML) and pass them to ``super().__init__``. The training step returns the loss; the guard checks it
    before the backward pass.

    Class attributes ``monitor`` / ``monitor_mode`` name the validation metric the CLI's best checkpoint
    tracks; the module must ``self.log`` it during validation.

    Args:
        optimizer: ``params -> Optimizer``; default AdamW with torch's defaults.
        scheduler: ``optimizer -> LRScheduler`` or ``None`` (constant learning rate). A
            ``pytorch_lightning.cli.ReduceLROnPlateau`` is stepped on its own ``monitor``.
        scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise MedzooDataError("scheduler_interval", repr(scheduler_interval), "'epoch' or 'step'")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        # Under LightningCLI the hyperparameters are the plain parsed config (so checkpoints load with
        # weights_only=True); elsewhere the callables are left out for the same reason.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, (ReduceLROnPlateau, torch.optim.lr_scheduler.ReduceLROnPlateau)):
            config["monitor"] = getattr(scheduler, "monitor", self.monitor)
        # A WarmupCosineLR stepped per optimizer step takes its run length (and --trainer.max_time) from
        # the trainer, so time- and step-limited runs anneal to the end.
        return follow_trainer({"optimizer": optimizer, "lr_scheduler": config}, self._trainer)

    def on_before_backward(self, loss: torch.Tensor) -> None:
        # Stop at the first non-finite loss instead of silently training a NaN model for hours.
        if not torch.isfinite(loss.detach()).all():
            trainer = self._trainer
            step = trainer.global_step if trainer is not None else "?"
            epoch = trainer.current_epoch if trainer is not None else "?"
            raise MedzooTrainingError(
                f"{type(self).__name__}: the training loss is {loss.detach().float().cpu().item()} "
                f"at global step {step}, epoch {epoch}; expected a finite number. "
                "Hint: lower model.optimizer.init_args.lr, add warm-up or gradient clipping "
                "(--trainer.gradient_clip_val 1.0), check the inputs for NaN/inf, or use "
                "--trainer.precision 32-true if training in half precision."
            )

    def export_weights(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        """Write ``self.state_dict()`` to ``path`` as safetensors (atomic) and return the path.

        Load it back with ``medzoo.weights.load_weights(path)`` or ``safetensors.torch.load_file``.
        """
        from medzoo.weights import save_weights

        return save_weights(self, path, metadata=metadata)

    def prediction_writer(self) -> PredictionWriter | None:
        """The callback that writes this module's ``predict`` outputs; ``None``: the package has no predict.

        The CLI attaches it during ``predict``; it writes into ``<trainer.default_root_dir>/predictions/``.
        """
        return None
