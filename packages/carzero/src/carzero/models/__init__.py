"""CARZero networks (torch + timm + transformers modules only; no I/O, no Lightning)."""

from carzero.models.carzero import CARZero, carzero_loss, symmetric_cross_entropy
from carzero.models.image_encoder import (
    VIT_CONFIGS,
    ImageEncoder,
    image_encoder,
    sincos_2d_position_embedding,
)
from carzero.models.similarity import CrossAttentionLayer, SimilarityRepresentation, similarity_head
from carzero.models.text_encoder import TextEncoder, continuation_mask_from_tokens, merge_word_pieces

__all__ = [
    "VIT_CONFIGS",
    "CARZero",
    "CrossAttentionLayer",
    "ImageEncoder",
    "SimilarityRepresentation",
    "TextEncoder",
    "carzero_loss",
    "continuation_mask_from_tokens",
    "image_encoder",
    "merge_word_pieces",
    "similarity_head",
    "sincos_2d_position_embedding",
    "symmetric_cross_entropy",
]
