"""Glue between the classifier and the detectors: features, predictions and MC-dropout uncertainty."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hfc_attack.detectors import DetectorInputs, LayerFusionDetector
from hfc_attack.models.features import FeatureExtractor

__all__ = ["detector_inputs", "mahalanobis_preprocess", "mc_dropout_uncertainty"]


def mc_dropout_uncertainty(model: nn.Module, images: torch.Tensor, samples: int = 50) -> torch.Tensor:
    """(B,) Feinman et al.'s Bayesian uncertainty ``1/T sum_t p_t.p_t - p_bar.p_bar`` with dropout on.

    Only the dropout modules are switched to training mode (BatchNorm keeps its running statistics).

    Raises:
        ValueError: the model has no dropout (there is nothing to sample).
    """
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    # timm's ResNet calls F.dropout(training=self.training) in its head: flip that one flag, not its BNs.
    heads = [m for m in model.modules() if float(getattr(m, "drop_rate", 0) or 0) > 0]
    if not dropouts and not heads:
        raise ValueError("BU needs a classifier with dropout (e.g. drop_rate > 0)")
    switched = dropouts + heads
    flags = [m.training for m in switched]
    for m in switched:
        m.training = True
    try:
        with torch.no_grad():
            probs = torch.stack([model(images).softmax(-1) for _ in range(samples)])  # (T, B, K)
    finally:
        for m, flag in zip(switched, flags, strict=True):
            m.training = flag
    return (probs * probs).sum(-1).mean(0) - (probs.mean(0) ** 2).sum(-1)


def detector_inputs(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 32,
    max_channels: int | None = 512,
    bu_samples: int = 0,
    seed: int = 0,
) -> DetectorInputs:
    """Pooled ReLU features, predictions and (``bu_samples > 0``) BU uncertainty of images (N, C, H, W)."""
    extractor = FeatureExtractor(model, max_channels=max_channels)
    model.eval()
    features: dict[str, list[np.ndarray]] = {}
    preds, uncertainty = [], []
    torch.manual_seed(seed)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        with torch.no_grad():
            logits, feats = extractor(batch)
        for name, value in feats.items():
            features.setdefault(name, []).append(value.double().numpy())
        preds.append(logits.argmax(1).numpy())
        if bu_samples > 0:
            uncertainty.append(mc_dropout_uncertainty(model, batch, bu_samples).double().numpy())
    return DetectorInputs(
        {k: np.concatenate(v) for k, v in features.items()},
        np.concatenate(preds),
        np.concatenate(uncertainty) if uncertainty else None,
    )


def mahalanobis_preprocess(
    model: nn.Module,
    images: torch.Tensor,
    detector: LayerFusionDetector,
    batch_size: int = 32,
    max_channels: int | None = 512,
) -> dict[str, np.ndarray]:
    """Lee et al.'s input pre-processing, one step per layer: ``x_l = x - noise * sign(grad_x d_l(x))`` with
    ``d_l`` the Mahalanobis distance of layer l's feature to its nearest class mean; returns ``{layer:
    (N, D_l)}`` features of ``x_l`` (the layer's own pre-processed input).

    The reference code steps *up* the distance (``+ noise * sign``); we follow Lee et al. (toward the class).
    """
    model.eval()
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in detector.layers}
    for i, layer in enumerate(detector.layers):
        extractor = FeatureExtractor(model, max_channels=max_channels, layers=[layer])
        means = torch.as_tensor(detector.params[f"{i}.means"], dtype=torch.float32)
        precision = torch.as_tensor(detector.params[f"{i}.precision"], dtype=torch.float32)
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].clone().requires_grad_(True)
            f = extractor(x)[1][layer]
            diff = f[:, None] - means[None]  # (B, K, D)
            distance = torch.einsum("bkd,de,bke->bk", diff, precision, diff).min(dim=1).values
            grad = torch.autograd.grad(distance.mean(), x)[0]
            with torch.no_grad():
                stepped = x.detach() - detector.noise * grad.sign()
                out[layer].append(extractor(stepped)[1][layer].double().numpy())
    return {layer: np.concatenate(v) for layer, v in out.items()}
