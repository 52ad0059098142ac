"""LTML-MIMIC-CXR networks and losses (torch + timm modules only; no I/O, no Lightning)."""

from __future__ import annotations

from typing import Any

from ltml_cxr.models.classifier import LTMLClassifier, PFCNeck
from ltml_cxr.models.losses import LOSS_CONFIGS, LOSS_NAMES, ResampleLoss, build_loss, num_reconsidered
from medzoo.models import build_model

__all__ = [
    "LOSS_CONFIGS",
    "LOSS_NAMES",
    "MODEL_CONFIGS",
    "LTMLClassifier",
    "PFCNeck",
    "ResampleLoss",
    "build_loss",
    "create_model",
    "num_reconsidered",
]

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # ResNet-50 -> PFC neck (2048 -> 256, BN, dropout .5) -> FC; 39 LTML-MIMIC-CXR classes.
    "paper": {"num_classes": 39, "backbone": "resnet50", "neck_channels": 256, "dropout": 0.5},
    # A 4-block ResNet-18-style net with widths 16..128 for CPU tests and the demo.
    "tiny": {
        "num_classes": 14,
        "backbone": "resnet18",
        "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
        "neck_channels": 32,
        "dropout": 0.5,
    },
}


def create_model(name: str = "paper", **overrides: Any) -> LTMLClassifier:
    """A named :class:`LTMLClassifier` (``MODEL_CONFIGS``), e.g. ``create_model("tiny", num_classes=5)``."""
    return build_model(MODEL_CONFIGS, LTMLClassifier, name, **overrides)
