"""Prediction outputs: per-image landmark CSV + JSON and an overlay PNG, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medzoo.io import read_image, to_uint8, write_csv, write_json, write_png
from medzoo.lightning import PredictionWriter

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
    image = Image.fromarray(to_uint8(values)).convert("RGB")
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


class LandmarkPredictionWriter(PredictionWriter):
    """Writes, for every predicted image ``<stem>``, into ``<default_root_dir>/predictions/``:

    - ``<stem>.csv``: columns ``landmark, x, y, score`` (+ ``x_mm, y_mm`` when the spacing is known); x, y in
      ORIGINAL image pixels (column, row; pixel centres at integers), mm = pixels * spacing;
    - ``<stem>.json``: ``{"image", "width", "height", "spacing_mm": [x, y] | null, "landmarks": [{"landmark",
      "x", "y", "score", ("x_mm", "y_mm")}]}``;
    - ``<stem>_overlay.png``: the image with numbered landmark markers (unless ``overlay`` is False);

    and ``summary.csv``, one row per image: ``image, x0, y0, x1, y1, ...`` (the medzoo landmark-CSV layout,
    readable by ``medzoo.io.read_landmark_csv``) plus ``mean_score``.

    Args:
        output_dir: target folder; default ``<trainer.default_root_dir>/predictions``.
        overlay: also write the overlay PNGs.
    """

    def __init__(self, output_dir: str | Path | None = None, overlay: bool = True) -> None:
        super().__init__(output_dir)
        self.overlay = overlay

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for i, path in enumerate(prediction["path"]):
            coords = np.asarray(prediction["landmarks"][i], dtype=np.float64)
            self.write_one(
                output_dir,
                Path(path),
                coords,
                prediction["scores"][i],
                prediction["spacing"][i],
                prediction["original_size"][i],
            )
            row: dict[str, Any] = {"image": Path(path).name}
            for k, (x, y) in enumerate(coords):
                row[f"x{k}"], row[f"y{k}"] = float(x), float(y)
            row["mean_score"] = float(np.mean(prediction["scores"][i]))
            rows.append(row)
        return rows

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
