"""HySparK networks (plain torch; no I/O, no Lightning) and their named configurations."""

from __future__ import annotations

from typing import Any

from hyspark.models.encoder import HybridEncoder, MaskedViT, MedNeXtBlock, convert_reference_state_dict
from hyspark.models.hyspark import (
    HySparK,
    HySparKOutput,
    LightDecoder,
    masked_patch_mse,
    patchify,
    unpatchify,
)
from hyspark.models.segmentation import HySparKSegmenter
from hyspark.models.sparse import spconv_available
from medzoo.models import model_settings

# Named configurations (timm-style): encoder kwargs plus the pre-training decoder width.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper: 96^3 crops, MedNeXt widths (32, 64, 128, 256, 384), ViT depth 3; heads img_size // 8 (None),
    # as the reference (12 at 96^3).
    "paper": {
        "img_size": 96,
        "widths": (32, 64, 128, 256, 384),
        "depths": (1, 1, 3, 3, 1),
        "expansions": (2, 4, 4, 4, 2),
        "vit_depth": 3,
        "vit_heads": None,
        "decoder_width": 768,
    },
    # CPU tests and the demo: 32^3 crops (a 2^3 token grid), narrow stages, one ViT block.
    "tiny": {
        "img_size": 32,
        "widths": (8, 16, 24, 32, 48),
        "depths": (1, 1, 1, 1, 1),
        "expansions": (2, 2, 2, 2, 2),
        "vit_depth": 1,
        "vit_heads": None,
        "decoder_width": 64,
    },
}

_ENCODER_KEYS = ("img_size", "widths", "depths", "expansions", "vit_depth", "vit_heads")


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of the named configuration ``paper`` or ``tiny`` with ``overrides`` applied."""
    return model_settings(MODEL_CONFIGS, name, **overrides)


def create_encoder(
    name: str = "paper", backend: str = "auto", spconv_algorithm: str = "auto", **overrides: Any
) -> HybridEncoder:
    """The hybrid encoder of a named configuration (see :class:`HybridEncoder` for the arguments)."""
    config = model_config(name, **overrides)
    return HybridEncoder(
        backend=backend, spconv_algorithm=spconv_algorithm, **{k: config[k] for k in _ENCODER_KEYS}
    )


def create_hyspark(
    name: str = "paper",
    backend: str = "dense",
    mask_ratio: float = 0.75,
    use_finest_skip: bool = False,
    spconv_algorithm: str = "auto",
    channels_last_decoder: bool = True,
    matmul_decoder: bool = True,
    **overrides: Any,
) -> HySparK:
    """The pre-training model for a named configuration (encoder arguments as :class:`HybridEncoder`,
    ``channels_last_decoder`` and ``matmul_decoder`` as :class:`HySparK`)."""
    config = model_config(name, **overrides)
    encoder = create_encoder(name, backend, spconv_algorithm, **overrides)
    return HySparK(
        encoder, mask_ratio, config["decoder_width"], use_finest_skip,
        channels_last_decoder=channels_last_decoder, matmul_decoder=matmul_decoder,
    )  # fmt: skip


def create_model(name: str = "paper", **overrides: Any) -> HySparK:
    """The pre-training network of a named configuration (the contract's entry point; see
    :func:`create_hyspark` for the keyword arguments)."""
    return create_hyspark(name, **overrides)


def create_segmenter(name: str = "paper", num_classes: int = 14, **overrides: Any) -> HySparKSegmenter:
    """The fine-tuning network for a named configuration."""
    config = model_config(name, **overrides)
    return HySparKSegmenter(num_classes, **{k: config[k] for k in _ENCODER_KEYS})


__all__ = [
    "MODEL_CONFIGS",
    "HySparK",
    "HySparKOutput",
    "HySparKSegmenter",
    "HybridEncoder",
    "LightDecoder",
    "MaskedViT",
    "MedNeXtBlock",
    "convert_reference_state_dict",
    "create_encoder",
    "create_hyspark",
    "create_model",
    "create_segmenter",
    "masked_patch_mse",
    "model_config",
    "patchify",
    "spconv_available",
    "unpatchify",
]
