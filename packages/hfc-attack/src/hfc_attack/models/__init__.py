"""nn.Modules of hfc-attack: the classifier under attack, the ReLU feature hooks and the HFC loss."""

from __future__ import annotations

from typing import Any

from hfc_attack.models.classifier import NormalizedClassifier
from hfc_attack.models.features import FeatureExtractor
from hfc_attack.models.hfc import GaussianMixture, HFCLoss

__all__ = ["MODEL_CONFIGS", "FeatureExtractor", "GaussianMixture", "HFCLoss", "NormalizedClassifier"]

# Named classifier settings (constructor arguments of NormalizedClassifier).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper's classifier: ResNet-50 (ImageNet-pretrained in the paper; see the README), binary task.
    "paper": {"backbone": "resnet50", "num_classes": 2, "in_chans": 3, "drop_rate": 0.5},
    # The demo's: a small timm ResNet (one BasicBlock per stage, 16..128 channels), CPU-sized.
    "tiny": {
        "backbone": "resnet_custom",
        "num_classes": 2,
        "in_chans": 3,
        "block": "basic",
        "layers": (1, 1, 1, 1),
        "channels": (16, 32, 64, 128),
        "stem_width": 16,
        "drop_rate": 0.5,
    },
}
