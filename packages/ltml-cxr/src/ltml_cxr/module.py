"""The LightningModule: a multi-label classifier trained with one of the six losses, evaluated per group."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from ltml_cxr.metrics import frequency_groups, long_tail_metrics, per_class_average_precision
from ltml_cxr.models import build_loss, create_model
from ltml_cxr.writers import ProbabilityWriter
from medzoo.errors import MedzooDataError
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter


def warmup_multistep_factor(
    step: int,
    steps_per_epoch: int,
    milestones: list[int],
    gamma: float,
    warmup_iters: int,
    warmup_ratio: float,
) -> float:
    """The reference's learning-rate factor at an optimizer step: linear warm-up, then steps at epochs.

    ``gamma ** (number of milestones <= epoch)``, times ``warmup_ratio + (1 - warmup_ratio) * step /
    warmup_iters`` during the first ``warmup_iters`` steps (mmcv's linear warm-up).
    """
    epoch = step // max(1, steps_per_epoch)
    factor = gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if step < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
    return factor


class LTMLModule(MedzooModule):
    """Long-tailed multi-label CXR classification (LTML-MIMIC-CXR).

    ``loss`` chooses one of the six compared losses (``ce``, ``focal``, ``db``, ``anr``, ``anr_lla``,
    ``anr_llm``); the class frequencies the DB-based losses need are those of the datamodule's training
    split (``class_counts``, ``num_train``), set in ``setup("fit")`` and kept in the checkpoint. The current
    (0-based) epoch is passed to the loss, so LLA / LLM reconsider large losses from epoch 1 on.

    Validation and test compute, over the whole split (gathered across DDP ranks), mAP, macro/micro/weighted
    AUC and macro/micro F1 at logit > 0, for the head / medium / tail / all classes; best checkpoints track
    ``val/mAP`` (the paper selects on the validation mAP).

    Args:
        num_classes: C (39 for LTML-MIMIC-CXR, 14 for ChestX-ray14).
        class_names: names of the C classes (default: the datamodule's, at fit time).
        variant, overrides: the model configuration (``MODEL_CONFIGS``) and its overrides.
        loss: the loss name; ``loss_overrides``: keyword overrides of ``ResampleLoss``.
        head_min, tail_below: group cuts on training positives (paper: 10000 and 1000).
        lr_milestones: epochs at which the learning rate is multiplied by ``lr_gamma`` (paper: [5, 7] of 8);
            with ``warmup_iters`` of linear warm-up from ``warmup_ratio`` (paper: 500 iterations, mmcv's 1/3).
            Used when ``scheduler`` is None; None = constant learning rate.
        optimizer, scheduler, scheduler_interval: see ``MedzooModule``.
    """

    monitor = "val/mAP"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int = 39,
        class_names: list[str] | None = None,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        loss: str = "anr_llm",
        loss_overrides: dict[str, Any] | None = None,
        head_min: float = 10000,
        tail_below: float = 1000,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_ratio: float = 1.0 / 3.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        if class_names is not None and len(class_names) != num_classes:
            raise MedzooDataError("model.class_names", f"{len(class_names)} names", f"{num_classes} names")
        self.model = create_model(variant, **{**(overrides or {}), "num_classes": num_classes})
        self.criterion = build_loss(loss, num_classes, **(loss_overrides or {}))
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else [f"class_{c}" for c in range(num_classes)]
        self.head_min, self.tail_below = float(head_min), float(tail_below)
        self.lr_milestones = list(lr_milestones) if lr_milestones else None
        self.lr_gamma, self.warmup_iters, self.warmup_ratio = float(lr_gamma), int(warmup_iters), warmup_ratio
        self.outputs = torch.nn.ModuleDict(
            {stage: GatherAccumulator("logits", "targets") for stage in ("val", "test")}
        )
        self.test_results: dict[str, float] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C) logits."""
        return self.model(images)

    # -- set-up from the data ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or datamodule is None or not hasattr(datamodule, "class_counts"):
            return
        names = list(datamodule.class_names)
        if len(names) != self.num_classes:
            raise MedzooDataError(
                "model.num_classes",
                f"{self.num_classes}",
                f"{len(names)}, the classes of the data ({names[:3]}...)",
            )
        self.class_names = names
        self.criterion.set_class_counts(datamodule.class_counts, datamodule.num_train)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "class_names" in checkpoint:
            self.class_names = list(checkpoint["class_names"])

    def configure_optimizers(self) -> Any:
        if self.scheduler_factory is not None or (self.lr_milestones is None and self.warmup_iters == 0):
            return super().configure_optimizers()
        optimizer = self.optimizer_factory(self.parameters())
        trainer = self._trainer
        max_epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else 1
        total = float(trainer.estimated_stepping_batches) if trainer is not None else 1.0
        # Epoch milestones in optimizer steps (the warm-up is counted in steps, as in the reference).
        steps_per_epoch = max(1, math.ceil(total / max(1, max_epochs))) if math.isfinite(total) else 1
        milestones, gamma = self.lr_milestones or [], self.lr_gamma
        warmup, ratio = self.warmup_iters, self.warmup_ratio

        def factor(step: int) -> float:
            return warmup_multistep_factor(step, steps_per_epoch, milestones, gamma, warmup, ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- steps -------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["labels"], epoch=self.current_epoch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def _evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        logits = self(batch["image"])
        # Evaluated without reconsideration (epoch 0): a plain, comparable number across epochs.
        loss = self.criterion(logits, batch["labels"], epoch=0)
        self.log(f"{stage}/loss", loss, batch_size=len(logits), sync_dist=True)
        self.outputs[stage].update(
            index=batch["index"], logits=logits.float(), targets=batch["labels"].float()
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def groups(self) -> dict[str, np.ndarray]:
        """Head / medium / tail / all class indices from the training class counts."""
        return frequency_groups(self.criterion.class_counts.cpu().numpy(), self.head_min, self.tail_below)

    def _log_metrics(self, stage: str) -> dict[str, float]:
        values = self.outputs[stage].compute()
        self.outputs[stage].reset()
        if not len(values["logits"]):
            return {}
        targets, logits = values["targets"].cpu().numpy(), values["logits"].cpu().numpy()
        metrics = long_tail_metrics(targets, logits, self.groups())
        if stage == "test":  # per-class AP and prevalence, for reports on single classes
            for name, ap, share in zip(
                self.class_names,
                per_class_average_precision(targets, logits),
                targets.mean(axis=0),
                strict=True,
            ):
                key = name.replace(" ", "_")
                metrics[f"AP_{key}"], metrics[f"prevalence_{key}"] = float(ap), float(share)
        for name, value in metrics.items():
            key = f"{stage}/mAP" if name == "mAP_all" else f"{stage}/{name}"
            self.log(key, float(np.nan_to_num(value, nan=0.0)) if key == f"{stage}/mAP" else value,
                     prog_bar=name == "mAP_all")  # fmt: skip
        return metrics

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        logits = self(batch["image"]).float()
        return {
            "path": list(batch["path"]),
            "class_names": list(self.class_names),
            "logits": logits.cpu().numpy(),
            "probabilities": logits.sigmoid().cpu().numpy(),
        }

    def prediction_writer(self) -> PredictionWriter:
        return ProbabilityWriter()  # class names travel with each prediction (set by the checkpoint)
