"""Models: SSL-ALPNet and its named configurations."""

from __future__ import annotations

from typing import Any

from fewshot_augsearch.models.alpnet import (
    ALPNet,
    ALPNetOutput,
    DilatedResNetEncoder,
    local_prototype_scores,
    masked_average_prototype,
)
from medzoo.models import build_model

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper's segmenter: ResNet-101 at output stride 8, 256 features, windows 4 (train) / 2 (test).
    "paper": {"backbone": "resnet101", "feature_channels": 256, "train_window": 4, "test_window": 2},
    # CPU demo and tests: the same design on a ResNet-18; 64x64 slices give 8x8 features, so a 2x2 training
    # window keeps the reference's 8x8 prototype grid per 32x32 feature map in proportion (4x4 grid).
    "tiny": {"backbone": "resnet18", "feature_channels": 64, "train_window": 2, "test_window": 1},
}


def create_model(name: str = "paper", **overrides: Any) -> ALPNet:
    """Build ALPNet from ``MODEL_CONFIGS[name]`` with keyword ``overrides``."""
    return build_model(MODEL_CONFIGS, ALPNet, name, **overrides)


__all__ = [
    "MODEL_CONFIGS",
    "ALPNet",
    "ALPNetOutput",
    "DilatedResNetEncoder",
    "create_model",
    "local_prototype_scores",
    "masked_average_prototype",
]
