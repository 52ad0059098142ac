"""The ``predict`` writer: one binary NIfTI mask per query volume, plus predictions/summary.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medzoo.io import write_volume
from medzoo.lightning import PredictionWriter

__all__ = ["MaskWriter"]


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


class MaskWriter(PredictionWriter):
    """Writes ``<query>_class<c>.nii.gz``: uint8 (0 background, 1 the support's class) in the query's own
    voxel grid and affine; ``summary.csv`` columns: ``image, mask, class_id, volume_ml`` (voxel count x voxel
    volume), ``z_first, z_last`` (the slices segmented, third voxel axis)."""

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        name = f"{_stem(prediction['path'])}_class{prediction['class_id']}.nii.gz"
        write_volume(output_dir / name, prediction["mask"], prediction["affine"])
        voxel_ml = (
            abs(float(np.linalg.det(np.asarray(prediction["affine"], dtype=np.float64)[:3, :3]))) / 1000.0
        )
        z0, z1 = prediction["z_range"]
        return [
            {
                "image": prediction["path"],
                "mask": name,
                "class_id": prediction["class_id"],
                "volume_ml": float(prediction["mask"].sum() * voxel_ml),
                "z_first": z0,
                "z_last": z1,
            }
        ]
