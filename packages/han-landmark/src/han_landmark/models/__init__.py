"""HAN networks: plain ``torch.nn`` modules, no I/O and no Lightning."""

from han_landmark.models.attention import GLOBAL_ATTENTION, BiLevelRoutingAttention
from han_landmark.models.blocks import (
    CBAM,
    BiFormerBlock,
    ChannelAttention,
    ConvAttentionBlock,
    SpatialAttention,
)
from han_landmark.models.han import (
    MODEL_CONFIGS,
    FeatureFusionCorrectionModule,
    FPNNeck,
    HybridAttentionNetwork,
    HybridBackbone,
    HybridStage,
    create_model,
    han_paper,
    han_tiny,
)

__all__ = [
    "CBAM",
    "GLOBAL_ATTENTION",
    "MODEL_CONFIGS",
    "BiFormerBlock",
    "BiLevelRoutingAttention",
    "ChannelAttention",
    "ConvAttentionBlock",
    "FPNNeck",
    "FeatureFusionCorrectionModule",
    "HybridAttentionNetwork",
    "HybridBackbone",
    "HybridStage",
    "SpatialAttention",
    "create_model",
    "han_paper",
    "han_tiny",
]
