"""LightningModule of HAN: the deep-supervision heatmap loss, decoding and MRE/SDR evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from han_landmark.models import create_model
from han_landmark.writers import LandmarkPredictionWriter
from medzoo.heatmaps import decode_heatmaps, gaussian_heatmaps
from medzoo.io import write_csv
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.metrics import mean_radial_error, radial_errors, successful_detection_rate


def input_to_heatmap(
    coords: torch.Tensor, input_hw: Sequence[int], heatmap_hw: Sequence[int]
) -> torch.Tensor:
    """Map (..., 2) (x, y) input pixels to a heatmap of another size (pixel centres aligned)."""
    scale = coords.new_tensor([heatmap_hw[1] / input_hw[1], heatmap_hw[0] / input_hw[0]])
    return (coords + 0.5) * scale - 0.5


def heatmap_to_input(
    coords: torch.Tensor, input_hw: Sequence[int], heatmap_hw: Sequence[int]
) -> torch.Tensor:
    """Inverse of :func:`input_to_heatmap`."""
    scale = coords.new_tensor([input_hw[1] / heatmap_hw[1], input_hw[0] / heatmap_hw[0]])
    return (coords + 0.5) * scale - 0.5


def decode_average(
    heatmaps: Sequence[torch.Tensor], input_hw: Sequence[int], refine: str = "log_quadratic"
) -> torch.Tensor:
    """Decode every head's heatmaps (B, K, h_i, w_i) to input pixels and average the coordinate sets.

    Returns (B, K, 2) float (x, y) in input pixels: the paper's test-time prediction (the mean of the
    three heads).
    """
    decoded = [
        heatmap_to_input(decode_heatmaps(h.float(), refine=refine), input_hw, h.shape[-2:]) for h in heatmaps
    ]
    return torch.stack(decoded).mean(dim=0)


def to_original(coords: torch.Tensor, to_input: torch.Tensor) -> torch.Tensor:
    """Map (B, K, 2) input pixels back to original pixels with the inverse of each (B, 3, 3) ``to_input``."""
    inverse = torch.linalg.inv(to_input.to(torch.float64))
    return coords.to(torch.float64) @ inverse[:, :2, :2].transpose(1, 2) + inverse[:, None, :2, 2]


def error_summary(errors: np.ndarray, unit: str) -> dict[str, float]:
    """``mre_<unit>``, ``mre_<unit>_median`` and ``mre_<unit>_std`` (population std) of the finite errors."""
    finite = errors[np.isfinite(errors)]
    mean, std = mean_radial_error(finite)
    return {f"mre_{unit}": mean, f"mre_{unit}_median": float(np.median(finite)), f"mre_{unit}_std": std}


def per_landmark_table(
    errors: np.ndarray, sdr_errors: np.ndarray, radii: Sequence[float], unit: str, sdr_name: str
) -> pd.DataFrame:
    """One row per landmark, in index order, then ``all``: ``landmark, n, mre, median, std, sdr_<r><unit>``.

    ``errors`` and ``sdr_errors`` are (N, K) (NaN where not annotated); MRE columns are in ``unit``.
    """
    rows = []
    for k in [*range(errors.shape[1]), "all"]:
        column = errors if k == "all" else errors[:, k]
        scaled = sdr_errors if k == "all" else sdr_errors[:, k]
        annotated = np.isfinite(column)
        values = column[annotated]
        row: dict[str, Any] = {"landmark": k, "n": int(annotated.sum()), "unit": unit}
        row.update(
            mre=float(values.mean()) if values.size else np.nan,
            median=float(np.median(values)) if values.size else np.nan,
            std=float(values.std()) if values.size else np.nan,
        )
        for radius in radii:
            row[f"sdr_{radius:g}{sdr_name}"] = (
                float(np.mean(scaled[annotated] < radius)) if values.size else np.nan
            )
        rows.append(row)
    return pd.DataFrame(rows)


class HANLandmarkModule(MedzooModule):
    """HAN trained with deep supervision on three heatmap resolutions.

    Loss (per head, Eq. of the reference's JointsMSELoss with target weights)::

        L = sum_i w_i * mean_{b,k,y,x} (v_bk * (P_i - G_i))^2

    with ``G_i`` the Gaussian target (sigma_i) at head i's resolution, ``w = (1000, 3000, 3000)`` and
    ``sigma = (2, 2, 4)`` for the 1/4, 1/2 and full-resolution heads, and ``v`` the landmark visibility.
    Prediction = mean of the three heads' decoded coordinates, mapped back to ORIGINAL image pixels;
    MRE/SDR use the per-image spacing (mm) where it is known.

    Args:
        num_landmarks: K.
        variant: named model configuration, ``"paper"`` or ``"tiny"``.
        overrides: overrides of the configuration (e.g. ``{"drop_path_rate": 0.0}``).
        loss_weights: weights of heads A (1/4), B (1/2), C (FFCM, full).
        sigmas: Gaussian target sigmas in each head's own pixels.
        sdr_radii: SDR radii in mm, used when every image has a spacing.
        sdr_radii_px, sdr_px_reference_size: SDR radii when the spacing is unknown: pixels of an image of
            ``sdr_px_reference_size`` (H, W), scaled by each image's diagonal (default: ISBI 2015's
            2400 x 1935, where 20/25/30/40 px are 2/2.5/3/4 mm); ``None`` compares raw pixels. Logged as
            ``sdr_<r>px_scaled`` (``sdr_<r>px`` unscaled).
        decode_refine: sub-pixel refinement of ``medzoo.heatmaps.decode_heatmaps``; ``"log_quadratic"``
            (exact for Gaussian peaks) by default, ``"quarter_offset"`` is the reference's shift.
        optimizer, scheduler, scheduler_interval: see ``MedzooModule``.

    Batches are dicts from ``han_landmark.data.LandmarkDataset``.
    """

    monitor = "val/mre"
    monitor_mode = "min"

    def __init__(
        self,
        num_landmarks: int = 19,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        loss_weights: tuple[float, float, float] = (1000.0, 3000.0, 3000.0),
        sigmas: tuple[float, float, float] = (2.0, 2.0, 4.0),
        sdr_radii: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0),
        sdr_radii_px: tuple[float, ...] = (20.0, 25.0, 30.0, 40.0),
        sdr_px_reference_size: tuple[int, int] | None = (2400, 1935),
        decode_refine: str = "log_quadratic",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.model = create_model(variant, **{**(overrides or {}), "num_landmarks": num_landmarks})
        self.num_landmarks = num_landmarks
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.sigmas = tuple(float(s) for s in sigmas)
        if len(self.loss_weights) != 3 or len(self.sigmas) != 3:
            raise ValueError("loss_weights and sigmas need one value per head (3)")
        self.sdr_radii = tuple(float(r) for r in sdr_radii)
        self.sdr_radii_px = tuple(float(r) for r in sdr_radii_px)
        self.sdr_px_reference_size = (
            None if sdr_px_reference_size is None else tuple(int(v) for v in sdr_px_reference_size)
        )
        self.decode_refine = decode_refine
        # Per-sample outputs gathered across DDP ranks, so MRE/SDR are computed over the whole split.
        self.outputs = torch.nn.ModuleDict(
            {stage: GatherAccumulator("pred", "target", "spacing", "size") for stage in ("val", "test")}
        )
        self.test_results: dict[str, Any] = {}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) standardised image -> heatmaps at 1/4, 1/2 and full resolution."""
        return self.model(image)

    # -- loss -----------------------------------------------------------------------------------------------
    def heatmap_targets(
        self, landmarks: torch.Tensor, input_hw: Sequence[int], heatmap_sizes: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """Gaussian targets (B, K, h_i, w_i) for each head from (B, K, 2) input-pixel landmarks."""
        return [
            gaussian_heatmaps(input_to_heatmap(landmarks, input_hw, size), size, sigma)
            for size, sigma in zip(heatmap_sizes, self.sigmas, strict=True)
        ]

    def loss_terms(
        self, heatmaps: Sequence[torch.Tensor], landmarks: torch.Tensor, visible: torch.Tensor, input_hw
    ) -> list[torch.Tensor]:
        """Weighted per-head losses ``w_i * mean((v * (P_i - G_i))^2)``."""
        targets = self.heatmap_targets(landmarks, input_hw, [h.shape[-2:] for h in heatmaps])
        weight = visible[:, :, None, None].to(heatmaps[0].dtype)
        return [
            w * ((pred - target) * weight).square().mean()
            for pred, target, w in zip(heatmaps, targets, self.loss_weights, strict=True)
        ]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        heatmaps = self(batch["image"])
        terms = self.loss_terms(heatmaps, batch["landmarks"], batch["visible"], batch["image"].shape[-2:])
        loss = torch.stack(terms).sum()
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, term in zip(("quarter", "half", "full"), terms, strict=True):
            self.log(f"train/loss_{name}", term, batch_size=size)
        return loss

    # -- prediction -----------------------------------------------------------------------------------------
    def predict_landmarks(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Heatmaps, averaged input-pixel landmarks and ORIGINAL-pixel landmarks (float64) of a batch."""
        heatmaps = self(batch["image"])
        coords_input = decode_average(heatmaps, batch["image"].shape[-2:], self.decode_refine)
        return {
            "heatmaps": heatmaps,
            "input": coords_input,
            "original": to_original(coords_input, batch["to_input"]),
        }

    def _evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        out = self.predict_landmarks(batch)
        terms = self.loss_terms(
            out["heatmaps"], batch["landmarks"], batch["visible"], batch["image"].shape[-2:]
        )
        self.log(
            f"{stage}/loss", torch.stack(terms).sum(), batch_size=batch["image"].shape[0], sync_dist=True
        )
        self.outputs[stage].update(
            index=batch["index"],
            pred=out["original"],
            target=batch["original_landmarks"],
            spacing=batch["spacing"],
            size=batch["original_size"],
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics("test", per_landmark=True)
        table = self.test_results.get("per_landmark")
        trainer = self._trainer
        if table is not None and trainer is not None and trainer.is_global_zero:
            # the per-landmark report next to the logs: <default_root_dir>/test_per_landmark.csv
            write_csv(Path(trainer.default_root_dir) / "test_per_landmark.csv", table)

    def _gather(self, stage: str) -> dict[str, np.ndarray]:
        values = self.outputs[stage].compute()
        self.outputs[stage].reset()
        return {key: value.cpu().numpy() for key, value in values.items()}

    def _log_metrics(self, stage: str, per_landmark: bool = False) -> dict[str, Any]:
        data = self._gather(stage)
        if not len(data["pred"]):
            return {}
        errors_px = radial_errors(data["pred"], data["target"])
        known = bool(np.isfinite(data["spacing"]).all())
        metrics = error_summary(errors_px, "px")
        errors, unit = errors_px, "px"
        if known:
            errors, unit = radial_errors(data["pred"], data["target"], spacing=data["spacing"]), "mm"
            metrics.update(error_summary(errors, "mm"))
        # the monitored "mre" is in mm when every image has a spacing, in pixels otherwise
        metrics["mre"] = metrics[f"mre_{unit}"]
        sdr_errors, radii, sdr_name = self.sdr_inputs(errors, known, data["size"])
        annotated = np.isfinite(errors)
        for radius, rate in successful_detection_rate(sdr_errors[annotated], radii).items():
            metrics[f"sdr_{radius:g}{sdr_name}"] = rate
        table = None
        if per_landmark:
            table = per_landmark_table(errors, sdr_errors, radii, unit, sdr_name)
            width = len(str(errors.shape[1] - 1))
            for row in table.itertuples():
                if row.landmark != "all" and np.isfinite(row.mre):
                    # zero-padded, so that sorted metric names list the landmarks in numeric order
                    metrics[f"mre_{unit}_landmark{int(row.landmark):0{width}d}"] = float(row.mre)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "mre")
        return {"metrics": metrics, "errors": errors, "unit": unit, "per_landmark": table, **data}

    def sdr_inputs(
        self, errors: np.ndarray, known: bool, sizes_hw: np.ndarray
    ) -> tuple[np.ndarray, tuple[float, ...], str]:
        """Errors, radii and unit name for SDR.

        With a spacing: ``sdr_radii`` in mm. Without: ``sdr_radii_px``, pixel radii on an image of
        ``sdr_px_reference_size`` (ISBI 2015's 2400 x 1935 by default, where 20 px = 2 mm), scaled by each
        image's diagonal; ``sdr_px_reference_size=None`` compares raw pixels.
        """
        if known:
            return errors, self.sdr_radii, "mm"
        if self.sdr_px_reference_size is None:
            return errors, self.sdr_radii_px, "px"
        reference = float(np.hypot(*self.sdr_px_reference_size))
        diagonal = np.hypot(sizes_hw[:, 0].astype(np.float64), sizes_hw[:, 1].astype(np.float64))
        return errors * (reference / diagonal)[:, None], self.sdr_radii_px, "px_scaled"

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        out = self.predict_landmarks(batch)
        scores = [h.float().flatten(2).amax(dim=2) for h in out["heatmaps"]]
        return {
            "path": list(batch["path"]),
            "landmarks": out["original"].cpu().numpy(),
            "scores": torch.stack(scores).mean(dim=0).cpu().numpy(),
            "spacing": batch["spacing"].cpu().numpy(),
            "original_size": batch["original_size"].cpu().numpy(),
        }

    def prediction_writer(self) -> PredictionWriter:
        return LandmarkPredictionWriter()
