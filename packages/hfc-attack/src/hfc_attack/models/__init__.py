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
    # 3D volumes (CT/MR, one channel, windowed to [0, 1]): MONAI ResNets with dropout and a linear head.
    # The 3D classifier for real volumes: MONAI's ResNet-18 (stem 7^3, stride 2).
    "resnet3d": {
        "backbone": "monai_resnet18",
        "spatial_dims": 3,
        "num_classes": 2,
        "in_chans": 1,
        "mean": (0.5,),
        "std": (0.5,),
        "drop_rate": 0.5,
    },
    # MONAI's ResNet-50 on volumes (bottleneck blocks; the widest stages exceed the 512-channel hook filter).
    "resnet3d_50": {
        "backbone": "monai_resnet50",
        "spatial_dims": 3,
        "num_classes": 2,
        "in_chans": 1,
        "mean": (0.5,),
        "std": (0.5,),
        "drop_rate": 0.5,
    },
    # The volume demo's: one BasicBlock per stage, 8..64 channels, a 3^3 stride-2 stem; CPU-sized.
    "resnet3d_tiny": {
        "backbone": "monai_resnet_custom",
        "spatial_dims": 3,
        "num_classes": 2,
        "in_chans": 1,
        "mean": (0.5,),
        "std": (0.5,),
        "block": "basic",
        "layers": (1, 1, 1, 1),
        "channels": (8, 16, 32, 64),
        "conv1_size": 3,
        "conv1_stride": 2,
        "drop_rate": 0.5,
    },
}
