"""carzero: CARZero cross-attention zero-shot chest X-ray classification (Lai et al., CVPR 2024)."""

from carzero.models import CARZero, ImageEncoder, SimilarityRepresentation, TextEncoder, carzero_loss

__version__ = "0.1.0"

__all__ = [
    "CARZero",
    "ImageEncoder",
    "SimilarityRepresentation",
    "TextEncoder",
    "__version__",
    "carzero_loss",
]
