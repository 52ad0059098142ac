"""LightningModules of both stages: the stage-1 contrastive embedding network and the stage-2 DATR."""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from medzoo.errors import MedzooDataError
from medzoo.heatmaps import gaussian_heatmaps
from medzoo.lightning import GatherAccumulator, MedzooModule, PredictionWriter
from medzoo.metrics import mean_radial_error, radial_errors, successful_detection_rate
from uod_oneshot.decoding import decode_largest_component
from uod_oneshot.losses import heatmap_loss, multiscale_infonce_loss
from uod_oneshot.models import SSL_STRIDES, create_model, create_ssl_model
from uod_oneshot.pretrained import load_vgg19_weights
from uod_oneshot.writers import LandmarkPredictionWriter

__all__ = ["DATRModule", "UODSSLModule", "landmark_metrics", "to_original"]

log = logging.getLogger(__name__)


def to_original(coords: torch.Tensor, to_input: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) input pixels -> original pixels with the inverse of each (B, 3, 3) ``to_input``."""
    inverse = torch.linalg.inv(to_input.to(torch.float64))
    return coords.to(torch.float64) @ inverse[:, :2, :2].transpose(1, 2) + inverse[:, None, :2, 2]


def landmark_metrics(
    pred: np.ndarray, target: np.ndarray, spacing: np.ndarray, radii: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)
) -> dict[str, float]:
    """MRE (mm where every image has a spacing, else px) and SDR of (N, K, 2) original-pixel landmarks."""
    known = bool(np.isfinite(spacing).all())
    errors = radial_errors(pred, target, spacing=spacing if known else None)
    finite = errors[np.isfinite(errors)]
    unit = "mm" if known else "px"
    metrics = {"mre": mean_radial_error(finite)[0], f"mre_{unit}": mean_radial_error(finite)[0]}
    for radius, rate in successful_detection_rate(errors, radii).items():
        metrics[f"sdr_{radius:g}{unit}"] = rate
    return metrics


class UODSSLModule(MedzooModule):
    """Stage 1: domain-adaptive embeddings trained with the multi-scale cosine InfoNCE between two views.

    The full view goes through ``net``, the crop view through ``crop_net`` (the reference's second network
    ``net_patch``; with ``separate_crop_network=False`` both views share ``net``). Both networks are in one
    Adam, which equals the reference's two Adams with the same settings (Adam is per parameter).
    Pseudo-labelling takes both the template's landmark features and the targets' maps from ``net``, as the
    reference's tester does (``crop_net`` only serves the loss).

    Args:
        num_domains: D (the number of ``data.domains``).
        variant: ``paper`` (VGG19) or ``tiny``.
        overrides: further model settings.
        separate_crop_network: a second network for the crop view (the reference: True).
        pretrained: VGG19 ImageNet weights: ``None`` (random, logged), ``"timm"`` or a file.
        strides: the scales of the loss (32, 16, 8, 4, 2; stride 1 is computed but unused, as in the
            reference).
        window: half-width in cells of the loss window below the coarsest scale (6).
        temperature: softmax temperature (1).
        optimizer, scheduler, scheduler_interval: see ``MedzooModule`` (the paper: Adam 1e-5, wd 1e-4,
            StepLR(50, 0.8)).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        num_domains: int = 3,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        separate_crop_network: bool = True,
        pretrained: str | None = None,
        strides: tuple[int, ...] = (32, 16, 8, 4, 2),
        window: int = 6,
        temperature: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        self.net = create_ssl_model(variant, **{**(overrides or {}), "num_domains": num_domains})
        load_vgg19_weights(self.net, pretrained)
        self.crop_net = copy.deepcopy(self.net) if separate_crop_network else None
        unknown = sorted(set(strides) - set(SSL_STRIDES))
        if unknown:
            raise MedzooDataError("model.strides", f"{unknown}", f"a subset of {SSL_STRIDES}")
        self.strides = tuple(int(s) for s in strides)
        self.window, self.temperature = int(window), float(temperature)
        self.num_domains = num_domains

    def embed(self, image: torch.Tensor, domain: int, crop_view: bool = False) -> list[torch.Tensor]:
        """Embedding maps at ``self.strides`` (B, C, H/s, W/s); ``crop_view`` selects ``crop_net``."""
        net = self.crop_net if crop_view and self.crop_net is not None else self.net
        maps = net(image, domain)
        return [maps[SSL_STRIDES.index(s)] for s in self.strides]

    def forward(self, image: torch.Tensor, domain: int = 0) -> list[torch.Tensor]:
        return self.embed(image, domain)

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        domain = int(batch["domain"][0])
        return multiscale_infonce_loss(
            self.embed(batch["image"], domain),
            self.embed(batch["crop"], domain, crop_view=True),
            batch["full_points"],
            batch["crop_points"],
            self.strides,
            self.window,
            self.temperature,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, terms = self._loss(batch)
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for stride, term in zip(self.strides, terms, strict=True):
            self.log(f"train/loss_s{stride}", term, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, _ = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0], sync_dist=True)


class DATRModule(MedzooModule):
    """Stage 2: DATR trained on alpha^Gaussian heatmaps with SmoothL1, evaluated by MRE/SDR per domain.

    Target per landmark: ``alpha ** g`` with ``g`` a Gaussian (sigma 10 px at the input size), values
    ``<= 1.05`` set to 0 (``medzoo.heatmaps.gaussian_heatmaps(alpha=...)``); loss SmoothL1 (beta 1.5)
    against the sigmoid output, as in the reference. Decoding: the largest connected component above
    ``0.25 * max``, then the mean of its pixels above ``0.88 * max``; mapped back to ORIGINAL pixels.

    Validation/test metrics per domain ``<stage>/<domain>/mre`` (mm where every image of the domain has a
    spacing, else px) and SDR; ``<stage>/mre`` is the mean over domains (the monitored metric).

    Args:
        num_landmarks: K of each domain, in the order of ``data.domains``.
        domain_names: names for the logs (default ``domain0``, ...).
        variant, overrides: model settings (``paper`` = Swin-B DATR).
        sigma, alpha, alpha_floor: the target (10, 10, 1.05).
        beta: SmoothL1 beta (1.5).
        low, high: decoding thresholds (0.25, 0.88).
        sdr_radii: SDR radii.
        self_training: the reference's relabelling when it trains on pseudo-labels: from epoch
            ``self_training * max_epochs`` on (1-based epochs above that fraction; the reference: 0.5), each
            training image's label is the model's own decoded prediction for it from the previous epoch
            (made in the training forward pass); ``None`` keeps the given labels throughout. Images without
            a prediction yet keep their label. Not for ``data.labels: ground_truth`` (the reference
            relabels only with ``--train_with_pseudo``).
        optimizer, scheduler, scheduler_interval: see ``MedzooModule`` (the paper: Adam, CyclicLR
            1e-4..1e-3 with 300 steps up and down, stepped per iteration).
    """

    monitor = "val/mre"
    monitor_mode = "min"

    def __init__(
        self,
        num_landmarks: list[int] | None = None,
        domain_names: list[str] | None = None,
        variant: str = "paper",
        overrides: dict[str, Any] | None = None,
        sigma: float = 10.0,
        alpha: float = 10.0,
        alpha_floor: float = 1.05,
        beta: float = 1.5,
        low: float = 0.25,
        high: float = 0.88,
        sdr_radii: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0),
        self_training: float | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval)
        num_landmarks = list(num_landmarks or [19, 37, 6])
        self.net = create_model(variant, **{**(overrides or {}), "num_landmarks": tuple(num_landmarks)})
        self.num_landmarks = num_landmarks
        self.domain_names = list(domain_names or [f"domain{i}" for i in range(len(num_landmarks))])
        if len(self.domain_names) != len(num_landmarks):
            raise MedzooDataError("model.domain_names", f"{self.domain_names}", f"{len(num_landmarks)} names")
        self.sigma, self.alpha, self.alpha_floor, self.beta = (
            float(sigma),
            float(alpha),
            float(alpha_floor),
            float(beta),
        )
        self.low, self.high = float(low), float(high)
        self.sdr_radii = tuple(float(r) for r in sdr_radii)
        self.outputs = torch.nn.ModuleDict(
            {stage: GatherAccumulator("pred", "target", "spacing", "domain") for stage in ("val", "test")}
        )
        self.test_results: dict[str, Any] = {}
        if self_training is not None and not 0.0 <= float(self_training) < 1.0:
            raise MedzooDataError("model.self_training", repr(self_training), "a fraction in [0, 1) or null")
        self.self_training = None if self_training is None else float(self_training)
        # own predictions (input px) per training index: this epoch's and the previous epoch's
        self._own_labels: dict[int, torch.Tensor] = {}
        self._previous_labels: dict[int, torch.Tensor] = {}

    def _relabels(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` trains on the previous epoch's own predictions (self-training)."""
        if self.self_training is None or self._trainer is None or not self.trainer.max_epochs:
            return False
        return epoch + 1 > self.self_training * self.trainer.max_epochs

    def on_train_epoch_start(self) -> None:
        self._previous_labels, self._own_labels = self._own_labels, {}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        found = getattr(datamodule, "num_landmarks", None)
        if found is not None and list(found) != list(self.num_landmarks):
            raise MedzooDataError(
                "model.num_landmarks",
                f"{self.num_landmarks}",
                f"the data's landmark counts per domain {list(found)}",
            )

    def forward(self, image: torch.Tensor, domain: int = 0) -> torch.Tensor:
        """(B, 1|3, S, S) -> (B, K_domain, S, S) heatmaps in (0, 1)."""
        return self.net(image, domain)

    def targets(self, landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """alpha^Gaussian targets (B, K, H, W) from (B, K, 2) input-pixel landmarks (NaN -> zero map)."""
        return gaussian_heatmaps(landmarks, size, self.sigma, alpha=self.alpha, alpha_floor=self.alpha_floor)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        domain = int(batch["domain"][0])
        landmarks = batch["landmarks"]
        epoch = self.current_epoch
        if self._relabels(epoch) and self._previous_labels:
            own = [self._previous_labels.get(int(i)) for i in batch["index"]]
            landmarks = torch.stack(
                [label if o is None else o.to(label) for label, o in zip(landmarks, own, strict=True)]
            )
        pred = self(batch["image"], domain)
        loss = heatmap_loss(pred, self.targets(landmarks, tuple(pred.shape[-2:])), self.beta)
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        if self._relabels(epoch + 1):  # the next epoch trains on these predictions
            coords = decode_largest_component(pred.detach(), self.low, self.high).cpu()
            for i, c in zip(batch["index"], coords, strict=True):
                self._own_labels[int(i)] = c
        return loss

    def predict_landmarks(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Heatmaps, input-pixel and ORIGINAL-pixel (float64) landmarks of a single-domain batch."""
        domain = int(batch["domain"][0])
        heatmaps = self(batch["image"], domain)
        coords = decode_largest_component(heatmaps, self.low, self.high)
        return {"heatmaps": heatmaps, "input": coords, "original": to_original(coords, batch["to_input"])}

    def _evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        out = self.predict_landmarks(batch)
        target = self.targets(batch["landmarks"], tuple(out["heatmaps"].shape[-2:]))
        self.log(
            f"{stage}/loss",
            heatmap_loss(out["heatmaps"], target, self.beta),
            batch_size=len(target),
            sync_dist=True,
        )
        width = max(self.num_landmarks)
        pad = width - out["original"].shape[1]
        nan = (0, 0, 0, pad)
        self.outputs[stage].update(
            index=batch["index"],
            pred=torch.nn.functional.pad(out["original"], nan, value=float("nan")),
            target=torch.nn.functional.pad(batch["original_landmarks"], nan, value=float("nan")),
            spacing=batch["spacing"],
            domain=batch["domain"].long(),
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics("test")

    def _log_metrics(self, stage: str) -> dict[str, dict[str, float]]:
        values = {k: v.cpu().numpy() for k, v in self.outputs[stage].compute().items()}
        self.outputs[stage].reset()
        if not len(values["pred"]):
            return {}
        results = {}
        for d, name in enumerate(self.domain_names):
            rows = values["domain"] == d
            if not rows.any():
                continue
            k = self.num_landmarks[d]
            metrics = landmark_metrics(
                values["pred"][rows, :k], values["target"][rows, :k], values["spacing"][rows], self.sdr_radii
            )
            results[name] = metrics
            for key, value in metrics.items():
                self.log(f"{stage}/{name}/{key}", value)
        self.log(f"{stage}/mre", float(np.mean([m["mre"] for m in results.values()])), prog_bar=True)
        return results

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        out = self.predict_landmarks(batch)
        return {
            "path": list(batch["path"]),
            "domain": self.domain_names[int(batch["domain"][0])],
            "landmarks": out["original"].cpu().numpy(),
            "scores": out["heatmaps"].float().flatten(2).amax(dim=2).cpu().numpy(),
            "spacing": batch["spacing"].cpu().numpy(),
            "original_size": batch["original_size"].cpu().numpy(),
        }

    def prediction_writer(self) -> PredictionWriter:
        return LandmarkPredictionWriter()
