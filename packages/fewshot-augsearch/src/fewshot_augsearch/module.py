"""The LightningModule: SSL-ALPNet trained on superpixel episodes, evaluated one-shot (3D Dice per scan)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from fewshot_augsearch.models import create_model
from medzoo.lightning import GatherAccumulator, MedzooModule
from medzoo.metrics import dice

__all__ = ["FewShotSegmentationModule"]


class FewShotSegmentationModule(MedzooModule):
    """SSL-ALPNet: weighted cross-entropy on the query + prototype alignment loss on the support.

    Training batches (B episodes): ``support_image``/``query_image`` (B, 1, H, W),
    ``support_mask``/``query_mask`` (B, H, W) in {0, 1}; each episode is a 1-way 1-shot
    task (the reference trains with batch size 1).
    Evaluation items (one per query scan and class, see ``fewshot_augsearch.data.OneShotDataset``) give the
    3D Dice of the whole query volume; ``val/dice`` is its mean over scans and classes (gathered over ranks).

    Args:
        variant, overrides: ``MODEL_CONFIGS`` name and constructor overrides.
        background_weight: cross-entropy weight of the background (0.05; the foreground's is 1).
        align_weight: weight of the alignment loss (1; 0 switches it off).
        eval_batch_size: query slices per forward pass in evaluation.
        optimizer, scheduler, scheduler_interval: see ``MedzooModule`` (paper: SGD 1e-3, momentum 0.9,
            weight decay 5e-4, StepLR every 1000 steps x 0.95).
    """

    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        background_weight: float = 0.05,
        align_weight: float = 1.0,
        eval_batch_size: int = 32,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.model = create_model(variant, **(overrides or {}))
        self.register_buffer("class_weight", torch.tensor([background_weight, 1.0]), persistent=False)
        self.align_weight, self.eval_batch_size = align_weight, eval_batch_size
        self.val_scores = GatherAccumulator("dice", "class_id")
        self.test_scores = GatherAccumulator("dice", "class_id")

    def episode_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean over the batch's episodes of CE(query) and the alignment loss."""
        ce, align = [], []
        for b in range(len(batch["query_image"])):
            out = self.model(
                batch["support_image"][b : b + 1],
                batch["support_mask"][b : b + 1, None],
                batch["query_image"][b : b + 1],
                align=self.align_weight > 0,
            )
            ce.append(F.cross_entropy(out.logits, batch["query_mask"][b : b + 1], weight=self.class_weight))
            align.append(out.align_loss)
        ce_loss, align_loss = torch.stack(ce).mean(), torch.stack(align).mean()
        return {"loss": ce_loss + self.align_weight * align_loss, "ce": ce_loss, "align": align_loss}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.episode_loss(batch)
        size = len(batch["query_image"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=size)
        return losses["loss"]

    @torch.no_grad()
    def segment_range(self, item: dict[str, Any]) -> torch.Tensor:
        """Masks (R, H, W) of the query slices of ``item``; chunk ``i`` is segmented with shot ``i``."""
        shots = self.model.forward_features(item["support_images"].to(self.device))
        masks = item["support_masks"].to(self.device)[:, None]
        query, chunks = item["query_images"].to(self.device), item["chunks"].to(self.device)
        prediction = torch.zeros(query.shape[0], *query.shape[-2:], dtype=torch.int64, device=self.device)
        window = self.model.test_window
        for part in range(len(shots)):
            (rows,) = torch.nonzero(chunks == part, as_tuple=True)
            for start in range(0, len(rows), self.eval_batch_size):
                idx = rows[start : start + self.eval_batch_size]
                features = self.model.forward_features(query[idx])
                logits = self.model.segment(features, shots[part : part + 1], masks[part : part + 1], window)
                logits = F.interpolate(logits, size=query.shape[-2:], mode="bilinear")
                prediction[idx] = logits.argmax(dim=1)
        return prediction

    def volume_prediction(self, item: dict[str, Any], n_slices: int) -> torch.Tensor:
        """(Z, H, W) binary prediction of the whole query volume: background outside the z-range."""
        z0, z1 = (int(v) for v in item["z_range"])
        inside = self.segment_range(item)
        volume = torch.zeros(n_slices, *inside.shape[-2:], dtype=torch.int64, device=inside.device)
        volume[z0 : z1 + 1] = inside
        return volume

    def _evaluate(self, item: dict[str, Any], scores: GatherAccumulator) -> None:
        label = item["query_label"]
        prediction = self.volume_prediction(item, len(label)).cpu()
        value = dice(prediction[None], label[None], num_classes=2)[0, 0]
        scores.update(
            index=torch.tensor([item["index"]], device=self.device),
            dice=torch.tensor([value], dtype=torch.float64, device=self.device),
            class_id=torch.tensor([item["class_id"]], device=self.device),
        )

    def validation_step(self, item: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(item, self.val_scores)

    def test_step(self, item: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(item, self.test_scores)

    def _log_scores(self, scores: GatherAccumulator, prefix: str) -> None:
        values = scores.compute()
        scores.reset()
        dices, classes = values["dice"].double().cpu(), values["class_id"].cpu()
        # Gathered values are identical on every rank, so no further sync is needed.
        self.log(f"{prefix}/dice", float(dices.mean()), prog_bar=True)
        for cls in torch.unique(classes).tolist():
            self.log(f"{prefix}/dice_class{int(cls)}", float(dices[classes == cls].mean()))

    def on_validation_epoch_end(self) -> None:
        self._log_scores(self.val_scores, "val")

    def on_test_epoch_end(self) -> None:
        self._log_scores(self.test_scores, "test")

    def predict_step(self, item: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The query volume's mask in its own voxel grid: ``mask`` (X, Y, Z) uint8 numpy in {0, 1}."""
        volume = self.volume_prediction(item, int(item["n_slices"])).float()
        x, y, _ = (int(v) for v in item["source_shape"])
        resized = F.interpolate(volume[:, None], size=(x, y), mode="nearest")[:, 0]  # (Z, X, Y)
        mask = np.ascontiguousarray(resized.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        return {
            "mask": mask,
            "affine": item["affine"].numpy(),
            "path": item["path"],
            "class_id": item["class_id"],
            "z_range": [int(v) for v in item["z_range"]],
        }

    def prediction_writer(self):
        from fewshot_augsearch.writers import MaskWriter

        return MaskWriter()
