"""apple-fairness: APPLE (Xu et al., MICCAI 2024), fair segmentation by adversarial perturbation of a frozen
segmentor's latent embedding."""

from apple_fairness.models import (
    APPLE,
    MODEL_CONFIGS,
    SEGMENTORS,
    AttentionUNetSegmentor,
    AttributeDiscriminator,
    CMUNeXtSegmentor,
    LatentPerturber,
    SAMSegmentor,
    Segmentor,
    UNetSegmentor,
    create_model,
    create_segmentor,
)

__version__ = "0.1.1"

__all__ = [
    "APPLE",
    "MODEL_CONFIGS",
    "SEGMENTORS",
    "AttentionUNetSegmentor",
    "AttributeDiscriminator",
    "CMUNeXtSegmentor",
    "LatentPerturber",
    "SAMSegmentor",
    "Segmentor",
    "UNetSegmentor",
    "__version__",
    "create_model",
    "create_segmentor",
]
