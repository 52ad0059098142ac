"""Lightning modules: HySparK pre-training and segmentation fine-tuning (losses and steps only)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import ResizeWithPadOrCrop
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from hyspark.checkpoints import encoder_state_from_checkpoint, read_checkpoint_state
from hyspark.models import create_hyspark, create_segmenter
from hyspark.models.encoder import upsample_cells
from hyspark.writers import ReconstructionWriter, SegmentationWriter
from medzoo.errors import MedzooWeightsError
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.metrics import dice


def cosine_schedule(start: float, end: float, progress: float) -> float:
    """Cosine interpolation from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, start_factor: float = 0.005, min_factor: float = 0.001
) -> float:
    """The reference's learning-rate factor at optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warm-up from ``start_factor`` over ``warmup_steps``, then a cosine from 1 that reaches
    ``min_factor`` at the last step (``total_steps - 1``), as the reference's ``lr_wd_annealing``.
    """
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps)
    return cosine_schedule(1.0, min_factor, progress)


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
            all training steps, set at every step (paper 0.04 -> 0.2); None keeps the optimizer's value.
        lr_warmup_epochs: the reference's learning-rate schedule, set at every optimizer step: a linear
            warm-up over this many epochs' steps from ``lr_warmup_start_factor`` x lr, then a cosine to
            ``lr_min_factor`` x lr at the last step (paper: 40 of 100 epochs, 0.005, 0.001). None leaves the
            learning rate to ``scheduler`` (or constant); both at once is an error.
        spconv_algorithm: see :class:`hyspark.models.HybridEncoder` ("auto": implicit GEMM on CUDA).
        optimizer, scheduler, scheduler_interval: see MedzooModule (paper: AdamW lr 1e-4).

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
        lr_warmup_epochs: float | None = None,
        lr_warmup_start_factor: float = 0.005,
        lr_min_factor: float = 0.001,
        spconv_algorithm: Literal["auto", "native", "implicit_gemm"] = "auto",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        if lr_warmup_epochs is not None and scheduler is not None:
            raise ValueError(
                "model.lr_warmup_epochs sets the learning rate at every step (the reference's schedule) and "
                "model.scheduler would overwrite it: set one of them, not both"
            )
        self.model = create_hyspark(
            variant,
            backend=backend,
            mask_ratio=mask_ratio,
            use_finest_skip=use_finest_skip,
            spconv_algorithm=spconv_algorithm,
            **(overrides or {}),
        )
        self.weight_decay_range = (weight_decay_start, weight_decay_end)
        self.lr_schedule = (lr_warmup_epochs, lr_warmup_start_factor, lr_min_factor)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set this step's weight decay and (``lr_warmup_epochs``) learning rate, as the reference does."""
        step, total = self.trainer.global_step, max(1, int(self.trainer.estimated_stepping_batches))
        start, end = self.weight_decay_range
        warmup_epochs, start_factor, min_factor = self.lr_schedule
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if start is not None and end is not None:
                    group["weight_decay"] = cosine_schedule(start, end, step / max(1, total - 1))
                if warmup_epochs is not None:
                    peak = group.setdefault("peak_lr", group["lr"])  # saved with the optimizer state
                    warmup = round(warmup_epochs * per_epoch)
                    group["lr"] = peak * warmup_cosine_factor(step, warmup, total, start_factor, min_factor)

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


def btcv_dice(per_volume: Tensor) -> tuple[Tensor, float]:
    """BTCV's summary of per-volume, per-class Dice (V, C-1) with NaN for a class absent from a label.

    Returns the per-class mean over the volumes that contain the class (C-1,) (NaN for a class in no
    volume) and the mean of those over the classes that occur (0.0 when none does).
    """
    present = ~per_volume.isnan()
    counts = present.sum(0)
    sums = torch.where(present, per_volume, torch.zeros_like(per_volume)).sum(0)
    per_class = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
    occurring = per_class[counts > 0]
    return per_class, float(occurring.mean()) if len(occurring) else 0.0


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
            The reference's pre-training checkpoint (``{'module': {'sparse_encoder.embeddings...'}}``) and its
            encoder-only ``.pth`` both load.
        pretrained_key: the entry of a torch ``pretrained`` file that holds the state dict; None picks
            ``"state_dict"`` (Lightning), else ``"module"`` (the reference), else the file itself.
        sw_overlap, sw_batch_size: sliding-window overlap and windows per forward pass, in validation, test
            and prediction.

    Training batches: image (B, 1, S, S, S) in [0, 1], label (B, 1, S, S, S) class indices. Validation and
    test batches hold one whole volume each, segmented with MONAI's ``sliding_window_inference`` (windows of
    ``img_size``, Gaussian weighting). Logs ``train/loss``, ``val/loss`` and ``val/dice``, the checkpoint
    monitor, as BTCV's protocol: per volume and foreground class the Dice of the argmax; a class absent from a
    volume's label is left out for that volume; per-class Dice is the mean over volumes (``val/dice_<c>``),
    and ``val/dice`` the mean over classes. Volumes are gathered from every DDP rank first, so the monitor
    is the same on every rank. The same under ``test/``.
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
        pretrained_key: str | None = None,
        sw_overlap: float = 0.5,
        sw_batch_size: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.model = create_segmenter(variant, num_classes=num_classes, **(overrides or {}))
        # Per-volume Dice gathered across DDP ranks: val/dice (the checkpoint monitor) is exact under DDP.
        self.dice_outputs = torch.nn.ModuleDict({s: GatherAccumulator("dice") for s in ("val", "test")})
        self.num_classes = num_classes
        self.sw_overlap, self.sw_batch_size = sw_overlap, sw_batch_size
        self.roi_size = (self.model.encoder.img_size,) * 3
        if loss == "dicece":
            self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        elif loss == "dice":
            self.loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
        else:
            raise ValueError(f"loss must be 'dicece' or 'dice', got {loss!r}")
        if pretrained is not None:
            self.load_pretrained_encoder(pretrained, pretrained_key)

    def load_pretrained_encoder(self, path: str, key: str | None = None) -> None:
        """Load encoder weights from ``path`` (see :func:`read_checkpoint_state`); all must match."""
        state = encoder_state_from_checkpoint(read_checkpoint_state(path, key))
        expected = self.model.encoder.state_dict()
        missing = sorted(set(expected) - set(state))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or wrong:
            raise MedzooWeightsError(
                f"{path}: found {len(state)} encoder tensors, {len(missing)} missing (first: {missing[:3]}) "
                f"and {len(wrong)} with another shape (first: {wrong[:3]}); "
                "expected the encoder of the same variant with the same img_size"
            )
        self.model.encoder.load_state_dict({k: state[k] for k in expected}, strict=True)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self.model(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def sliding_window_logits(self, image: Tensor) -> Tensor:
        """(B, 1, X, Y, Z) whole volumes -> (B, num_classes, X, Y, Z) logits through sliding windows."""
        return sliding_window_inference(
            image, self.roi_size, self.sw_batch_size, self.model, overlap=self.sw_overlap, mode="gaussian"
        )

    def _evaluation_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        image = torch.as_tensor(batch["image"])
        logits = self.sliding_window_logits(image)
        loss = self.loss_fn(logits, batch["label"])
        predicted, labels = logits.argmax(1), batch["label"][:, 0].long()
        # (B, C-1): NaN where a class is absent from the label (BTCV: such a class is not scored).
        scores = dice(
            predicted.cpu(), labels.cpu(), num_classes=self.num_classes, ignore_empty=True, reduction="none"
        )
        self.log(f"{stage}/loss", loss, batch_size=image.shape[0], sync_dist=True)
        per_class = torch.as_tensor(np.asarray(scores), dtype=torch.float64, device=self.device)
        self.dice_outputs[stage].update(index=batch.get("index"), dice=per_class)

    def _log_dice(self, stage: str) -> None:
        values = self.dice_outputs[stage].compute()["dice"]  # (volumes, C-1), the same on every rank
        self.dice_outputs[stage].reset()
        if not len(values):
            return
        per_class, mean = btcv_dice(values)
        for c, value in enumerate(per_class.tolist(), start=1):
            if not math.isnan(value):
                self.log(f"{stage}/dice_{c}", value, sync_dist=True)
        self.log(f"{stage}/dice", mean, prog_bar=True, sync_dist=True)

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
        logits = self.sliding_window_logits(image.as_tensor().to(self.device))
        labels = logits.argmax(1).to(torch.uint8).cpu()  # (1, X, Y, Z)
        return {
            "path": batch["path"],
            "labels": labels,
            "affine": image.affine.cpu(),
            "num_classes": self.num_classes,
        }
