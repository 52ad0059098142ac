"""Prediction outputs: per-image landmark CSV + JSON and an overlay PNG, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pytorch_lightning.callbacks import BasePredictionWriter

from medzoo.io import read_image, write_csv, write_json, write_landmark_csv, write_png

# distinguishable marker colours (RGB), cycled over landmarks
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)  # fmt: skip


def overlay_landmarks(array: np.ndarray, coords: np.ndarray, radius: int | None = None) -> np.ndarray:
    """An RGB uint8 copy of ``array`` (H, W[, C]) with a numbered circle on every (x, y) landmark."""
    from PIL import Image, ImageDraw

    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.dtype != np.uint8:
        values = values.astype(np.float64)
        low, high = values.min(), values.max()
        values = ((values - low) / (high - low) * 255 if high > low else values * 0).astype(np.uint8)
    image = Image.fromarray(values).convert("RGB")
    radius = radius or max(2, round(min(image.size) / 120))
    draw = ImageDraw.Draw(image)
    for k, (x, y) in enumerate(coords):
        if not np.isfinite([x, y]).all():
            continue
        colour = PALETTE[k % len(PALETTE)]
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), outline=colour, width=max(1, radius // 2)
        )
        draw.text((x + radius + 1, y - radius - 1), str(k), fill=colour)
    return np.asarray(image)


class LandmarkPredictionWriter(BasePredictionWriter):
    """Writes, for every predicted image ``<stem>``, into ``output_dir``:

    - ``<stem>.csv``: columns ``landmark, x, y, score`` (+ ``x_mm, y_mm`` when the spacing is known); x, y in
      ORIGINAL image pixels (column, row; pixel centres at integers), mm = pixels * spacing;
    - ``<stem>.json``: ``{"image", "width", "height", "spacing_mm": [x, y] | null, "landmarks": [{"index",
      "x", "y", "score", ("x_mm", "y_mm")}]}``;
    - ``<stem>_overlay.png``: the image with numbered landmark markers (unless ``overlay`` is False);

    and at the end ``landmarks.csv`` (``image, x0, y0, ...``, the medzoo CSV layout) for all images.

    Args:
        output_dir: target folder; default ``<trainer.default_root_dir>/predictions``.
        overlay: also write the overlay PNGs.
    """

    def __init__(self, output_dir: str | None = None, overlay: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.overlay = overlay
        self._summary: dict[str, np.ndarray] = {}

    def resolve_dir(self, trainer) -> Path:
        folder = Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._summary = {}

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: dict[str, Any],
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        folder = self.resolve_dir(trainer)
        for i, path in enumerate(prediction["path"]):
            self.write_one(
                folder,
                Path(path),
                prediction["landmarks"][i],
                prediction["scores"][i],
                prediction["spacing"][i],
                prediction["original_size"][i],
            )

    def write_one(
        self,
        folder: Path,
        path: Path,
        coords: np.ndarray,
        scores: np.ndarray,
        spacing: np.ndarray,
        size_hw: np.ndarray,
    ) -> None:
        """Write the CSV, JSON and overlay of one image."""
        known = bool(np.isfinite(spacing).all())
        table = pd.DataFrame(
            {"landmark": np.arange(len(coords)), "x": coords[:, 0], "y": coords[:, 1], "score": scores}
        )
        if known:
            table["x_mm"] = coords[:, 0] * spacing[0]
            table["y_mm"] = coords[:, 1] * spacing[1]
        write_csv(folder / f"{path.stem}.csv", table)
        write_json(
            folder / f"{path.stem}.json",
            {
                "image": str(path),
                "width": int(size_hw[1]),
                "height": int(size_hw[0]),
                "spacing_mm": [float(spacing[0]), float(spacing[1])] if known else None,
                "landmarks": [
                    {k: (int(v) if k == "landmark" else float(v)) for k, v in row.items()}
                    for row in table.to_dict(orient="records")
                ],
            },
        )
        if self.overlay:
            write_png(folder / f"{path.stem}_overlay.png", overlay_landmarks(read_image(path).array, coords))
        self._summary[path.name] = np.asarray(coords, dtype=np.float64)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if not self._summary:
            return
        name = "landmarks.csv" if trainer.world_size == 1 else f"landmarks_rank{trainer.global_rank}.csv"
        write_landmark_csv(self.resolve_dir(trainer) / name, self._summary)
