"""``predict`` outputs: per-image landmark CSV + JSON and an overlay PNG, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medzoo.io import read_image, to_uint8, write_csv, write_json, write_png
from medzoo.lightning import PredictionWriter

__all__ = ["LandmarkPredictionWriter", "overlay_landmarks"]

PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)  # fmt: skip


def overlay_landmarks(array: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """An RGB uint8 copy of ``array`` (H, W[, C]) with a numbered circle on every (x, y) landmark."""
    from PIL import Image, ImageDraw

    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    image = Image.fromarray(to_uint8(values)).convert("RGB")
    radius = max(2, round(min(image.size) / 120))
    draw = ImageDraw.Draw(image)
    for k, (x, y) in enumerate(coords):
        if np.isfinite([x, y]).all():
            colour = PALETTE[k % len(PALETTE)]
            draw.ellipse(
                (x - radius, y - radius, x + radius, y + radius), outline=colour, width=max(1, radius // 2)
            )
            draw.text((x + radius + 1, y - radius - 1), str(k), fill=colour)
    return np.asarray(image)


class LandmarkPredictionWriter(PredictionWriter):
    """Writes for every image ``<stem>`` into ``<default_root_dir>/predictions/``:

    - ``<stem>.csv``: ``landmark, x, y, score`` (+ ``x_mm, y_mm`` when the spacing is known), x/y in ORIGINAL
      pixels (column, row; pixel centres at integers); ``score`` = the heatmap maximum in (0, 1);
    - ``<stem>.json``: ``{"image", "domain", "width", "height", "spacing_mm", "landmarks": [...]}``;
    - ``<stem>_overlay.png``: the image with numbered markers;

    and ``summary.csv``: one row per image, ``image, domain, x0, y0, ..., mean_score``.
    """

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for i, name in enumerate(prediction["path"]):
            path = Path(name)
            coords = np.asarray(prediction["landmarks"][i], dtype=np.float64)
            scores = np.asarray(prediction["scores"][i], dtype=np.float64)
            spacing = np.asarray(prediction["spacing"][i], dtype=np.float64)
            height, width = (int(v) for v in prediction["original_size"][i])
            table = pd.DataFrame(
                {"landmark": np.arange(len(coords)), "x": coords[:, 0], "y": coords[:, 1], "score": scores}
            )
            known = bool(np.isfinite(spacing).all())
            if known:
                table["x_mm"], table["y_mm"] = coords[:, 0] * spacing[0], coords[:, 1] * spacing[1]
            write_csv(output_dir / f"{path.stem}.csv", table)
            write_json(
                output_dir / f"{path.stem}.json",
                {
                    "image": str(path),
                    "domain": prediction["domain"],
                    "width": width,
                    "height": height,
                    "spacing_mm": spacing.tolist() if known else None,
                    "landmarks": [
                        {k: (int(v) if k == "landmark" else float(v)) for k, v in r.items()}
                        for r in table.to_dict(orient="records")
                    ],
                },
            )
            write_png(
                output_dir / f"{path.stem}_overlay.png", overlay_landmarks(read_image(path).array, coords)
            )
            row: dict[str, Any] = {"image": path.name, "domain": prediction["domain"]}
            for k, (x, y) in enumerate(coords):
                row[f"x{k}"], row[f"y{k}"] = float(x), float(y)
            row["mean_score"] = float(scores.mean())
            rows.append(row)
        return rows
