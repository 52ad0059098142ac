"""Prediction outputs: per-image landmark CSV + JSON and an overlay PNG, written atomically."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medzoo.io import read_image, to_uint8, write_csv, write_json, write_png
from medzoo.lightning import PredictionWriter


def landmark_palette(count: int = 40) -> list[tuple[int, int, int]]:
    """``count`` distinguishable RGB colours: 20 evenly spaced hues, bright first, then darker at offset hues.

    The first 20 are fully distinct hues; landmarks 20-39 get the same hue wheel shifted by half a step at
    60 % value, so no two of the first 40 colours coincide. Beyond 40 the list repeats.
    """
    colours = []
    for k in range(count):
        ring, step = divmod(k % 40, 20)
        hue = (step + 0.5 * ring) / 20
        value = 1.0 if ring == 0 else 0.6
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, value)))
    return colours


PALETTE = tuple(landmark_palette(40))


def overlay_landmarks(
    array: np.ndarray, coords: np.ndarray, radius: int | None = None, font_size: int | None = None
) -> np.ndarray:
    """An RGB uint8 copy of ``array`` (H, W[, C]) with a numbered circle on every (x, y) landmark.

    Marker radius and label size scale with the image: ``radius = max(2, min(H, W) / 120)`` and
    ``font_size = max(10, min(H, W) / 40)`` pixels (a 2400 x 1935 cephalogram gets 48 px labels).
    """
    from PIL import Image, ImageDraw, ImageFont

    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    image = Image.fromarray(to_uint8(values)).convert("RGB")
    radius = radius or max(2, round(min(image.size) / 120))
    font_size = font_size or max(10, round(min(image.size) / 40))
    font = ImageFont.load_default(size=font_size)
    draw = ImageDraw.Draw(image)
    for k, (x, y) in enumerate(coords):
        if not np.isfinite([x, y]).all():
            continue
        colour = PALETTE[k % len(PALETTE)]
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), outline=colour, width=max(1, radius // 2)
        )
        # a dark outline keeps the label readable on bright bone
        draw.text(
            (x + radius + 2, y - radius - font_size), str(k), fill=colour, font=font,
            stroke_width=max(1, font_size // 12), stroke_fill=(0, 0, 0),
        )  # fmt: skip
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
