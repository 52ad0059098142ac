"""ECAMP networks (torch + timm + transformers modules only; no I/O, no Lightning)."""

from __future__ import annotations

from typing import Any

from ecamp.models.downstream import ViTClassifier, ViTSegmenter
from ecamp.models.ecamp import ECAMP, ECAMPOutput, attention_to_patch_grid, window_from_attention
from ecamp.models.losses import (
    dice_coefficient,
    focal_loss,
    masked_image_loss,
    patch_mask_to_pixels,
    segmentation_loss,
    weighted_mlm_loss,
    window_mask,
    window_sr_loss,
)
from ecamp.models.super_resolution import SuperResolutionHead
from ecamp.models.text import ContextFusionLayer, ReportMLM
from ecamp.models.vit import MAEDecoder, MaskedViTEncoder, patchify, random_masking, unpatchify

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper: MAE ViT-B/16 at 224 (448 SR target), 512-d 4-layer 16-head decoder, BERT 768/6/6/1536/256.
    "paper": {
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "decoder_embed_dim": 512,
        "decoder_depth": 4,
        "decoder_num_heads": 16,
        "vocab_size": 30000,
        "text_hidden": 768,
        "text_layers": 6,
        "text_heads": 6,
        "text_ffn_dim": 1536,
        "max_length": 256,
    },
    # CPU tests and the demo: 64 px encoder input (128 px SR target), 8x8 patches of 8 px.
    "tiny": {
        "img_size": 64,
        "patch_size": 8,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 4,
        "decoder_embed_dim": 64,
        "decoder_depth": 2,
        "decoder_num_heads": 4,
        "vocab_size": 1000,
        "text_hidden": 64,
        "text_layers": 2,
        "text_heads": 4,
        "text_ffn_dim": 128,
        "max_length": 64,
    },
}

ENCODER_KEYS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio")


def create_model(name: str = "paper", **overrides: Any) -> ECAMP:
    """Build the ECAMP pre-training network from a named configuration (``paper`` or ``tiny``)."""
    from medzoo.models import build_model

    return build_model(MODEL_CONFIGS, ECAMP, name, **overrides)


def create_encoder(name: str = "paper", **overrides: Any) -> MaskedViTEncoder:
    """Build the image encoder of a named configuration alone (fine-tuning); other keys are ignored."""
    from medzoo.models import model_settings

    settings = model_settings(MODEL_CONFIGS, name, **overrides)
    return MaskedViTEncoder(**{k: v for k, v in settings.items() if k in ENCODER_KEYS})


__all__ = [
    "ECAMP",
    "ENCODER_KEYS",
    "MODEL_CONFIGS",
    "ContextFusionLayer",
    "ECAMPOutput",
    "MAEDecoder",
    "MaskedViTEncoder",
    "ReportMLM",
    "SuperResolutionHead",
    "ViTClassifier",
    "ViTSegmenter",
    "attention_to_patch_grid",
    "create_encoder",
    "create_model",
    "dice_coefficient",
    "focal_loss",
    "masked_image_loss",
    "patch_mask_to_pixels",
    "patchify",
    "random_masking",
    "segmentation_loss",
    "unpatchify",
    "weighted_mlm_loss",
    "window_from_attention",
    "window_mask",
    "window_sr_loss",
]
