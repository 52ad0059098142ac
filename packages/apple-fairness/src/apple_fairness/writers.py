"""``predict`` outputs: one label mask per input image, as PNG and/or NIfTI, plus ``summary.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.io import write_png, write_volume
from medzoo.lightning import PredictionWriter

__all__ = ["MaskWriter"]

_FORMATS = ("png", "nifti", "both")


class MaskWriter(PredictionWriter):
    """Writes, for every input ``<stem>``, into ``<default_root_dir>/predictions/``:

    - ``<stem>_mask.png`` (``<stem>_<index>_mask.png`` for a repeated file name): (H, W) uint8 label map
      at the input's ORIGINAL size, values = class indices (0 background, 1..C-1 the classes; e.g.
      FairSeg 1 rim, 2 cup);
    - ``<stem>_mask.nii.gz`` (``mask_format`` nifti/both): the same labels as a NIfTI of shape
      (W, H, 1) = (column, row, 1) with an identity affine (1 mm pixels: 2D images carry no spacing);

    and ``summary.csv`` with ``image, mask, height, width`` and ``fraction_class_<k>`` (share of pixels
    labelled k, k >= 1).

    Args:
        mask_format: ``png``, ``nifti`` or ``both``.
        output_dir: default ``<trainer.default_root_dir>/predictions``.
    """

    def __init__(self, mask_format: str = "png", output_dir: str | Path | None = None) -> None:
        super().__init__(output_dir)
        if mask_format not in _FORMATS:
            raise MedzooDataError("mask_format", repr(mask_format), f"one of {_FORMATS}")
        self.mask_format = mask_format
        self._stems: set[str] = set()

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_predict_epoch_start(trainer, pl_module)
        self._stems = set()

    def _unique_stem(self, path: str, index: int) -> str:
        # Inputs found recursively may share a name (a/x.png, b/x.png): keep both, the second as x_<index>.
        stem = Path(path).stem
        if stem in self._stems:
            stem = f"{stem}_{index}"
        self._stems.add(stem)
        return stem

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        indices = [int(i) for i in batch["index"]]
        for path, mask, num_classes, index in zip(
            prediction["path"], prediction["masks"], prediction["num_classes"], indices, strict=True
        ):
            stem = self._unique_stem(path, index)
            labels = np.asarray(mask, dtype=np.uint8)
            written = []
            if self.mask_format in ("png", "both"):
                written.append(write_png(output_dir / f"{stem}_mask.png", labels))
            if self.mask_format in ("nifti", "both"):
                volume = np.ascontiguousarray(labels.T[:, :, None])  # (column, row, 1)
                written.append(write_volume(output_dir / f"{stem}_mask.nii.gz", volume, np.eye(4)))
            row = {
                "image": str(path),
                "mask": written[0].name,
                "height": labels.shape[0],
                "width": labels.shape[1],
            }
            for k in range(1, int(num_classes)):
                row[f"fraction_class_{k}"] = float(np.mean(labels == k))
            rows.append(row)
        return rows
