"""HySparK: hybrid sparse masking pre-training of a CNN+ViT encoder on 3D CT (MICCAI 2024).

Also fine-tuning for segmentation. Public API: the networks and their named configurations.
"""

from hyspark.models import (
    HybridEncoder,
    HySparK,
    HySparKSegmenter,
    convert_reference_state_dict,
    create_encoder,
    create_hyspark,
    create_model,
    create_segmenter,
    spconv_available,
)

__version__ = "0.4.1"

__all__ = [
    "HySparK",
    "HySparKSegmenter",
    "HybridEncoder",
    "__version__",
    "convert_reference_state_dict",
    "create_encoder",
    "create_hyspark",
    "create_model",
    "create_segmenter",
    "spconv_available",
]
