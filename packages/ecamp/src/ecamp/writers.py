"""Prediction outputs of fine-tuned ECAMP models, written atomically through the core PredictionWriter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medzoo.io import write_csv, write_png
from medzoo.lightning import PredictionWriter

__all__ = ["ClassificationWriter", "SegmentationWriter"]


class ClassificationWriter(PredictionWriter):
    """Per image ``<stem>.csv`` (columns ``finding, probability``: sigmoid outputs in [0, 1]) and one
    ``summary.csv`` row (``image`` path, then one probability column per finding). Class names come from
    the module (the training data's classes); unknown names become ``class_<k>``."""

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        self.class_names = getattr(pl_module, "class_names", None)
        super().write_on_batch_end(
            trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
        )

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        probabilities = prediction["probabilities"].numpy()
        names = self.class_names or [f"class_{k}" for k in range(probabilities.shape[1])]
        rows = []
        for path, values in zip(prediction["path"], probabilities, strict=True):
            table = pd.DataFrame({"finding": names, "probability": values.astype(np.float64)})
            write_csv(output_dir / f"{Path(path).stem}.csv", table)
            rows.append({"image": str(path), **dict(zip(names, values.astype(float).tolist(), strict=True))})
        return rows


class SegmentationWriter(PredictionWriter):
    """Per image ``<stem>_mask.png`` (uint8 0/255 binary mask at the ORIGINAL image size) and
    ``<stem>_probability.png`` (uint8, probability x 255); ``summary.csv`` rows: image, mask file,
    foreground fraction, height, width.

    Args:
        threshold: probability above which a pixel is foreground.
    """

    def __init__(self, output_dir: str | Path | None = None, threshold: float = 0.5) -> None:
        super().__init__(output_dir)
        self.threshold = float(threshold)

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for path, probability, size in zip(
            prediction["path"], prediction["probabilities"], prediction["size"], strict=True
        ):
            height, width = (int(v) for v in size)
            resized = Image.fromarray(probability[0].numpy().astype(np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
            values = np.clip(np.asarray(resized), 0.0, 1.0)
            mask = (values > self.threshold).astype(np.uint8) * 255
            stem = Path(path).stem
            write_png(output_dir / f"{stem}_mask.png", mask)
            write_png(output_dir / f"{stem}_probability.png", np.round(values * 255).astype(np.uint8))
            rows.append(
                {
                    "image": str(path),
                    "mask": f"{stem}_mask.png",
                    "foreground_fraction": float((mask > 0).mean()),
                    "height": height,
                    "width": width,
                }
            )
        return rows
