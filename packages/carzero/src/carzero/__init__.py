"""carzero: CARZero cross-attention zero-shot chest X-ray classification (Lai et al., CVPR 2024)."""

from carzero.factory import create_model
from carzero.models import (
    MODEL_CONFIGS,
    CARZero,
    ImageEncoder,
    SimilarityRepresentation,
    TextEncoder,
    carzero_loss,
)

__version__ = "0.3.3"

__all__ = [
    "MODEL_CONFIGS",
    "CARZero",
    "ImageEncoder",
    "SimilarityRepresentation",
    "TextEncoder",
    "__version__",
    "carzero_loss",
    "create_model",
]
