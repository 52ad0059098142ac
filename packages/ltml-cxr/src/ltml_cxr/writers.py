"""Prediction outputs: per-image class probabilities as CSV, and one summary table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medzoo.io import write_csv
from medzoo.lightning import PredictionWriter

__all__ = ["ProbabilityWriter"]


class ProbabilityWriter(PredictionWriter):
    """Writes, for every predicted image ``<stem>``, into ``<default_root_dir>/predictions/``:

    - ``<stem>.csv``: one row per class, columns ``class, probability, logit, positive`` (probability =
      sigmoid(logit) in [0, 1]; ``positive`` = 1 when logit > 0, the paper's F1 threshold);

    and ``summary.csv``: one row per image, ``image`` (the input path) then one probability column per class.

    Args:
        class_names: the C class names, in the model's output order; None = those each prediction carries
            (``prediction["class_names"]``, known only once the checkpoint is loaded).
        output_dir: target folder; default ``<trainer.default_root_dir>/predictions``.
    """

    def __init__(
        self, class_names: Sequence[str] | None = None, output_dir: str | Path | None = None
    ) -> None:
        super().__init__(output_dir)
        self.class_names = None if class_names is None else list(class_names)

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        names = self.class_names or list(prediction["class_names"])
        rows = []
        for path, logits, probabilities in zip(
            prediction["path"], prediction["logits"], prediction["probabilities"], strict=True
        ):
            table = pd.DataFrame(
                {
                    "class": names,
                    "probability": probabilities.astype(float),
                    "logit": logits.astype(float),
                    "positive": (logits > 0).astype(int),
                }
            )
            write_csv(output_dir / f"{Path(path).stem}.csv", table)
            rows.append({"image": str(path), **dict(zip(names, map(float, probabilities), strict=True))})
        return rows
