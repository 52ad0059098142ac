"""Lightning modules: HySparK pre-training and segmentation fine-tuning (losses and steps only)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import ResizeWithPadOrCrop
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from hyspark.models import convert_reference_state_dict, create_hyspark, create_segmenter
from hyspark.models.encoder import upsample_cells
from hyspark.writers import ReconstructionWriter, SegmentationWriter
from medzoo.errors import MedzooWeightsError
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.metrics import dice
from medzoo.weights import load_weights


def cosine_schedule(start: float, end: float, progress: float) -> float:
    """Cosine interpolation from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class HySparKPretrainModule(MedzooModule):
    """HySparK masked pre-training.

    Args:
        variant: named network configuration, "paper" (96^3) or "tiny".
        overrides: settings replacing the configuration's, e.g. ``{"img_size": 64}`` (must match
            ``data.crop_size``).
        backend: sparse CNN compute: "auto" (spconv on CUDA when installed, else dense), "dense", "spconv".
        mask_ratio: fraction of 16^3 cells masked per sample (paper 0.75).
        use_finest_skip: see :class:`hyspark.models.HySparK`.
        weight_decay_start, weight_decay_end: AdamW weight decay follows a cosine from start to end over
            all training steps (paper 0.04 -> 0.2); None keeps the optimizer's value.
        optimizer, scheduler, scheduler_interval: see MedzooModule (paper: AdamW lr 1e-4; 40 warm-up epochs
            from 0.005 lr, then cosine to 0.001 lr).

    Batches: ``{"image": (B, 1, S, S, S) in [0, 1]}``. Logs ``train/loss`` and ``val/loss`` (masked-patch
    MSE; validation masks are seeded by batch index so the metric is comparable across epochs).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        backend: Literal["auto", "dense", "spconv"] = "auto",
        mask_ratio: float = 0.75,
        use_finest_skip: bool = False,
        weight_decay_start: float | None = 0.04,
        weight_decay_end: float | None = 0.2,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.model = create_hyspark(
            variant,
            backend=backend,
            mask_ratio=mask_ratio,
            use_finest_skip=use_finest_skip,
            **(overrides or {}),
        )
        self.weight_decay_range = (weight_decay_start, weight_decay_end)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        start, end = self.weight_decay_range
        if start is None or end is None:
            return
        total = max(1, int(self.trainer.estimated_stepping_batches) - 1)
        decay = cosine_schedule(start, end, self.trainer.global_step / total)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["weight_decay"] = decay

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch["image"]).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image = batch["image"]
        generator = torch.Generator().manual_seed(batch_idx)
        cells = self.model.generate_mask(image.shape[0], image.device, generator=generator)
        loss = self.model(image, cells).loss
        self.log("val/loss", loss, prog_bar=True, batch_size=image.shape[0], sync_dist=True)
        return loss

    def prediction_writer(self) -> PredictionWriter:
        return ReconstructionWriter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Centre crop (padded) of each volume -> input, masked input, visible + reconstruction (numpy)."""
        size = self.model.encoder.img_size
        image = ResizeWithPadOrCrop((size,) * 3)(batch["image"][0]).as_tensor()[None].to(self.device)
        generator = torch.Generator().manual_seed(batch_idx)
        cells = self.model.generate_mask(1, image.device, generator=generator)
        masked, reconstruction, composite = self.model.reconstruct(image, cells)
        to_numpy = lambda t: t[0, 0].float().cpu().numpy()  # noqa: E731
        hidden = ~upsample_cells(cells, self.model.patch)  # voxels the model did not see
        error = (reconstruction - image)[hidden.expand_as(image)]
        return {
            "path": batch["path"],
            "input": to_numpy(image),
            "masked": to_numpy(masked),
            "masked_mse": float(error.float().pow(2).mean()) if error.numel() else float("nan"),
            "reconstruction": to_numpy(composite),
        }


def encoder_state_from_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder weights from any supported layout: this package's Lightning checkpoint / exported weights
    (``model.encoder.*``), a ``HySparK`` state dict (``encoder.*``), a bare ``HybridEncoder`` state dict, or
    the reference implementation's ``embeddings.*`` / ``mae.*`` keys (see convert_reference_state_dict)."""
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return convert_reference_state_dict(state)


class HySparKSegmentationModule(MedzooModule):
    """Fine-tuning for segmentation: HySparK encoder (dense) + UNet-style decoder.

    Args:
        variant: "paper" or "tiny" (as pre-training, so weights match).
        overrides: settings replacing the configuration's, e.g. ``{"img_size": 64}`` (= ``data.crop_size``;
            the sliding window size).
        num_classes: classes including background (14 for BTCV).
        loss: "dicece" (Dice + cross-entropy) or "dice".
        pretrained: weights of a pre-trained encoder (.ckpt / .safetensors / .pth; any layout accepted by
            :func:`encoder_state_from_checkpoint`), loaded at construction; every encoder tensor must match.
        sw_overlap: sliding-window overlap in prediction.

    Batches: image (B, 1, S, S, S) in [0, 1], label (B, 1, S, S, S) class indices. Logs ``train/loss``,
    ``val/loss`` and ``val/dice`` (the checkpoint monitor: mean over volumes of the mean foreground Dice of
    the argmax; classes absent from both prediction and label are skipped), and the same under ``test/``.
    """

    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(
        self,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        num_classes: int = 14,
        loss: Literal["dicece", "dice"] = "dicece",
        pretrained: str | None = None,
        sw_overlap: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.model = create_segmenter(variant, num_classes=num_classes, **(overrides or {}))
        # Per-volume Dice gathered across DDP ranks: val/dice (the checkpoint monitor) is exact under DDP.
        self.dice_outputs = torch.nn.ModuleDict({s: GatherAccumulator("dice") for s in ("val", "test")})
        self.num_classes = num_classes
        self.sw_overlap = sw_overlap
        if loss == "dicece":
            self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        elif loss == "dice":
            self.loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
        else:
            raise ValueError(f"loss must be 'dicece' or 'dice', got {loss!r}")
        if pretrained is not None:
            self.load_pretrained_encoder(pretrained)

    def load_pretrained_encoder(self, path: str) -> None:
        state = encoder_state_from_checkpoint(load_weights(path))
        expected = self.model.encoder.state_dict()
        missing = sorted(set(expected) - set(state))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or wrong:
            raise MedzooWeightsError(
                f"{path}: found {len(state)} encoder tensors, {len(missing)} missing (first: {missing[:3]}) "
                f"and {len(wrong)} with another shape (first: {wrong[:3]}); "
                "expected the encoder of the same variant with the same img_size"
            )
        self.model.encoder.load_state_dict({k: state[k] for k in expected})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self.model(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _evaluation_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["label"])
        predicted, labels = logits.argmax(1), batch["label"][:, 0].long()
        scores = dice(
            predicted.cpu(), labels.cpu(), num_classes=self.num_classes, reduction="none"
        )  # (B, C-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a volume with every class undefined -> NaN -> 0
            per_volume = torch.as_tensor(np.nanmean(scores, axis=1), dtype=torch.float64, device=self.device)
        batch_size = batch["image"].shape[0]
        self.log(f"{stage}/loss", loss, batch_size=batch_size, sync_dist=True)
        self.dice_outputs[stage].update(index=batch.get("index"), dice=torch.nan_to_num(per_volume, nan=0.0))

    def _log_dice(self, stage: str) -> None:
        values = self.dice_outputs[stage].compute()["dice"]
        self.dice_outputs[stage].reset()
        if len(values):
            self.log(f"{stage}/dice", float(values.mean()), prog_bar=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")

    def prediction_writer(self) -> PredictionWriter:
        return SegmentationWriter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Sliding-window segmentation of a whole preprocessed volume; labels keep the image's affine."""
        image = batch["image"]
        size = (self.model.encoder.img_size,) * 3
        logits = sliding_window_inference(
            image.as_tensor().to(self.device), size, 1, self.model, overlap=self.sw_overlap, mode="gaussian"
        )
        labels = logits.argmax(1).to(torch.uint8).cpu()  # (1, X, Y, Z)
        return {
            "path": batch["path"],
            "labels": labels,
            "affine": image.affine.cpu(),
            "num_classes": self.num_classes,
        }
