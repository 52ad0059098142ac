"""uod-oneshot: Universal One-shot Detection (UOD, MICCAI 2023) of anatomical landmarks across domains."""

from uod_oneshot.decoding import decode_largest_component
from uod_oneshot.losses import heatmap_loss, multiscale_infonce_loss
from uod_oneshot.matching import match_landmarks, most_representative, template_features
from uod_oneshot.models import (
    DATR,
    MODEL_CONFIGS,
    SSL_MODEL_CONFIGS,
    UniversalSSLNet,
    create_model,
    create_ssl_model,
)

__version__ = "0.3.1"

__all__ = [
    "DATR",
    "MODEL_CONFIGS",
    "SSL_MODEL_CONFIGS",
    "UniversalSSLNet",
    "__version__",
    "create_model",
    "create_ssl_model",
    "decode_largest_component",
    "heatmap_loss",
    "match_landmarks",
    "most_representative",
    "multiscale_infonce_loss",
    "template_features",
]
