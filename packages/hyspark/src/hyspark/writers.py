"""Prediction writers (Lightning callbacks): reconstruction PNGs and segmentation NIfTIs (atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ResampleToMatch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter

from medzoo.io import read_volume, write_png, write_volume


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


class _Writer(BasePredictionWriter):
    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def folder(self, trainer: Trainer) -> Path:
        folder = Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class ReconstructionWriter(_Writer):
    """Pre-training predictions: one PNG per volume, the middle axial slice (Z) of the centre crop as
    three uint8 panels side by side: input | masked input | visible input + reconstruction.

    Files: ``<output_dir or default_root_dir/predictions>/<volume>_reconstruction.png``.
    """

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Any, *args: Any, **kwargs: Any
    ) -> None:
        if "reconstruction" not in prediction:
            return
        z = prediction["input"].shape[2] // 2
        panels = [prediction[k][:, :, z] for k in ("input", "masked", "reconstruction")]
        # Rows = Y (anterior up after a flip), columns = X, intensities [0, 1] -> uint8.
        image = np.concatenate([np.flipud(np.clip(p, 0.0, 1.0).T) for p in panels], axis=1)
        write_png(self.folder(trainer) / f"{_stem(prediction['path'])}_reconstruction.png",
                  np.round(image * 255).astype(np.uint8))  # fmt: skip


class SegmentationWriter(_Writer):
    """Fine-tuning predictions: a uint8 label NIfTI per volume, resampled (nearest) back to the input's own
    voxel grid and affine. Files: ``<output_dir or default_root_dir/predictions>/<volume>_seg.nii.gz``.
    """

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Any, *args: Any, **kwargs: Any
    ) -> None:
        if "labels" not in prediction:
            return
        source = read_volume(prediction["path"])
        labels = MetaTensor(prediction["labels"].float(), affine=prediction["affine"])
        target = MetaTensor(
            torch.zeros((1, *source.array.shape)), affine=torch.as_tensor(source.affine, dtype=torch.float64)
        )
        resampled = ResampleToMatch(mode="nearest", padding_mode="zeros")(labels, img_dst=target)
        array = np.asarray(resampled.as_tensor()[0].round().numpy(), dtype=np.uint8)
        write_volume(self.folder(trainer) / f"{_stem(prediction['path'])}_seg.nii.gz", array, source.affine)
