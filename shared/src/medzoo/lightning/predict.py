"""The base of every package's ``predict`` writer: one folder, one file per input, one summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` outputs atomically into ``<trainer.default_root_dir>/predictions/``.

    A subclass implements :meth:`write_batch`: it writes the files of each input of a batch (through
    ``medzoo.io``'s atomic writers) and returns one summary row per input. At the end of the epoch the rows
    of every DDP rank are gathered, duplicates from the distributed sampler's padding dropped, and rank 0
    writes ``predictions/summary.csv``.

    Args:
        output_dir: the target folder; ``None`` means ``<trainer.default_root_dir>/predictions``.
    """

    summary_name = "summary.csv"

    def __init__(self, output_dir: str | Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self._rows: list[dict[str, Any]] = []

    def resolve_dir(self, trainer: pl.Trainer) -> Path:
        """The folder this writer writes into (created)."""
        folder = self.output_dir or Path(trainer.default_root_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_batch(self, prediction: Any, batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        """Write the files of every input in ``batch`` and return one summary row (a flat dict) per input."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_batch")

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._rows.extend(self.write_batch(prediction, batch, self.resolve_dir(trainer)))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._rows
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        if trainer.is_global_zero:
            self.write_summary(rows, self.resolve_dir(trainer))

    def write_summary(self, rows: list[dict[str, Any]], output_dir: Path) -> Path:
        """Write ``rows`` (padding duplicates dropped, input order kept) as ``output_dir/summary.csv``."""
        from medzoo.io import write_csv

        table = pd.DataFrame(rows)
        if not table.empty:
            table = table.drop_duplicates(subset=[table.columns[0]], keep="first").reset_index(drop=True)
        return write_csv(output_dir / self.summary_name, table)
