"""The LightningModule that trains the classifier under attack (cross-entropy, accuracy and AUROC)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from hfc_attack.models import MODEL_CONFIGS, NormalizedClassifier
from hfc_attack.writers import ClassScoreWriter
from medzoo.lightning import MedzooModule, PredictionWriter
from medzoo.models import build_model

__all__ = ["ClassifierModule"]


class ClassifierModule(MedzooModule):
    """A :class:`NormalizedClassifier` trained with cross-entropy; inputs (B, C, H, W) in [0, 1].

    Args:
        variant: a name of ``MODEL_CONFIGS`` (``paper``: ResNet-50, ``tiny``: the demo's small ResNet).
        overrides: constructor settings replacing the variant's (e.g. ``{"num_classes": 4}``).
        optimizer, scheduler, scheduler_interval: see ``MedzooModule``.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.variant = variant
        self.model: NormalizedClassifier = build_model(
            MODEL_CONFIGS, NormalizedClassifier, variant, **(overrides or {})
        )
        k = self.model.num_classes
        # torchmetrics sync their states across DDP ranks: the monitored val/acc is the whole split's.
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": metric
                for stage in ("val", "test")
                for name, metric in (
                    ("acc", MulticlassAccuracy(k, average="micro")),
                    ("auroc", MulticlassAUROC(k)),
                )
            }
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, K) logits."""
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        logits = self(batch["image"])
        labels = batch["label"]
        n = len(labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), sync_dist=True, batch_size=n)
        for name in ("acc", "auroc"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(logits.softmax(-1), labels)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "acc", batch_size=n)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = self(batch["image"]).softmax(-1)
        return {"name": list(batch["name"]), "probabilities": probs.float().cpu().numpy()}

    def prediction_writer(self) -> PredictionWriter:
        return ClassScoreWriter()
