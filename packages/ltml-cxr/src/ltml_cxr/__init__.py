"""ltml-cxr: long-tailed multi-label chest X-ray classification (LTML-MIMIC-CXR, arXiv 2311.17334)."""

from ltml_cxr.models import (
    LOSS_CONFIGS,
    LOSS_NAMES,
    MODEL_CONFIGS,
    LTMLClassifier,
    ResampleLoss,
    build_loss,
    create_model,
)

__version__ = "0.1.2"

__all__ = [
    "LOSS_CONFIGS",
    "LOSS_NAMES",
    "MODEL_CONFIGS",
    "LTMLClassifier",
    "ResampleLoss",
    "__version__",
    "build_loss",
    "create_model",
]
