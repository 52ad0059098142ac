"""Prediction writers: reconstruction PNGs and segmentation NIfTIs, plus each summary.csv (atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ResampleToMatch

from medzoo.io import read_volume, to_uint8, write_png, write_volume
from medzoo.lightning import PredictionWriter


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


class ReconstructionWriter(PredictionWriter):
    """Pre-training predictions: one PNG per volume, the middle axial slice (Z) of the centre crop as
    three uint8 panels side by side: input | masked input | visible input + reconstruction.

    Files in ``<default_root_dir>/predictions/``: ``<volume>_reconstruction.png``, and ``summary.csv`` with
    ``image, reconstruction_png, masked_mse`` (the mean squared error of the reconstruction on the masked
    voxels of the crop, intensities in [0, 1]).
    """

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        z = prediction["input"].shape[2] // 2
        panels = [prediction[k][:, :, z] for k in ("input", "masked", "reconstruction")]
        # Rows = Y (anterior up after a flip), columns = X, intensities [0, 1] -> uint8.
        image = np.concatenate([np.flipud(np.clip(p, 0.0, 1.0).T) for p in panels], axis=1)
        name = f"{_stem(prediction['path'])}_reconstruction.png"
        write_png(output_dir / name, to_uint8(image, 0.0, 1.0))
        return [
            {
                "image": prediction["path"],
                "reconstruction_png": name,
                "masked_mse": prediction["masked_mse"],
            }
        ]


class SegmentationWriter(PredictionWriter):
    """Fine-tuning predictions: a uint8 label NIfTI per volume, resampled (nearest) back to the input's own
    voxel grid and affine: ``<default_root_dir>/predictions/<volume>_seg.nii.gz``; and ``summary.csv`` with
    ``image, mask`` and ``volume_ml_<c>`` for every foreground class ``c`` (voxel count x voxel volume).
    """

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        source = read_volume(prediction["path"])
        labels = MetaTensor(prediction["labels"].float(), affine=prediction["affine"])
        target = MetaTensor(
            torch.zeros((1, *source.array.shape)), affine=torch.as_tensor(source.affine, dtype=torch.float64)
        )
        resampled = ResampleToMatch(mode="nearest", padding_mode="zeros")(labels, img_dst=target)
        array = np.asarray(resampled.as_tensor()[0].round().numpy(), dtype=np.uint8)
        name = f"{_stem(prediction['path'])}_seg.nii.gz"
        write_volume(output_dir / name, array, source.affine)
        voxel_ml = abs(float(np.linalg.det(np.asarray(source.affine, dtype=np.float64)[:3, :3]))) / 1000.0
        counts = np.bincount(array.ravel(), minlength=int(prediction["num_classes"]))
        row: dict[str, Any] = {"image": prediction["path"], "mask": name}
        row.update({f"volume_ml_{c}": float(counts[c] * voxel_ml) for c in range(1, len(counts))})
        return [row]
