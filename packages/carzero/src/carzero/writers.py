"""Zero-shot score outputs: one JSON per image and one summary table, written atomically."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from medzoo.io import write_json
from medzoo.lightning import PredictionWriter

__all__ = ["ZeroShotScoreWriter", "score_file_name"]


def score_file_name(name: str) -> str:
    """The per-image file for input `name` (a path relative to the predict root): `a/b.png` -> `a/b.json`."""
    return str(PurePosixPath(name).with_suffix(".json"))


class ZeroShotScoreWriter(PredictionWriter):
    """Writes CARZero's zero-shot scores into ``<trainer.default_root_dir>/predictions/`` (or `output_dir`).

    For every input image ``<name>`` (its path relative to ``--data.predict_root``, or its file name when the
    root is a file):

    - ``<name without suffix>.json``: ``{"image": "<path>", "scores": {"<finding>": score, ...}}``;

    and ``summary.csv``: one row per image, ``image`` (= ``<name>``) then one column per finding.

    A score is the raw zero-shot logit (S_i2t + S_t2i^T)/2 of the image against the finding's class prompts
    (averaged when a class has several): higher means more likely; it is not a probability, and no threshold
    is meaningful without calibration on labelled data.
    """

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        names = list(prediction["class_names"])
        scores = np.asarray(prediction["scores"], dtype=np.float64)
        rows = []
        for i, (name, path) in enumerate(zip(prediction["name"], prediction["path"], strict=True)):
            values = {finding: float(scores[i, c]) for c, finding in enumerate(names)}
            write_json(output_dir / score_file_name(name), {"image": str(path), "scores": values})
            rows.append({"image": str(name), **values})
        return rows
