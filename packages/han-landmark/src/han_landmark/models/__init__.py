"""HAN networks: plain ``torch.nn`` modules, no I/O and no Lightning."""

from .attention import GLOBAL_ATTENTION, BiLevelRoutingAttention
from .blocks import CBAM, BiFormerBlock, ChannelAttention, ConvAttentionBlock, SpatialAttention
from .han import (
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
