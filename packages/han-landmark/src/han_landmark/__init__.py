"""han-landmark: the Hybrid Attention Network (HAN, arXiv 2412.06499) for anatomical landmark detection."""

from han_landmark.models import (
    BiLevelRoutingAttention,
    HybridAttentionNetwork,
    create_model,
    han_paper,
    han_tiny,
)

__version__ = "0.3.1"

__all__ = [
    "BiLevelRoutingAttention",
    "HybridAttentionNetwork",
    "__version__",
    "create_model",
    "han_paper",
    "han_tiny",
]
