"""ecamp: ECAMP entity-centred context-aware medical vision-language pre-training (arXiv 2312.13316)."""

from ecamp.models import ECAMP, MODEL_CONFIGS, ViTClassifier, ViTSegmenter, create_encoder, create_model

__version__ = "0.3.1"

__all__ = [
    "ECAMP",
    "MODEL_CONFIGS",
    "ViTClassifier",
    "ViTSegmenter",
    "__version__",
    "create_encoder",
    "create_model",
]
