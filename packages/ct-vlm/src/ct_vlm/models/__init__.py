"""CT-VLM networks (plain torch; no I/O, no Lightning) and their named configurations."""

from __future__ import annotations

from typing import Any

from torch import nn

from ct_vlm.models.ctvlm import CTVLM, IGNORE_INDEX, apply_lora, splice_visual_tokens
from ct_vlm.models.mae import MAE3D, MAEOutput, masked_patch_mse, random_masking
from ct_vlm.models.projector import ConvProjector3D, LinearProjector, conv_output_grid
from ct_vlm.models.vit3d import ViT3D, patchify, unpatchify
from medzoo.errors import MedzooDataError
from medzoo.models import model_settings

# Named configurations (timm-style): ViT, MAE decoder and projector settings. The language model is not
# part of them: it is any Hugging Face causal LM, named by the LightningModule's `language_model`.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper's scale: ViT-B/16 on 256x256x128 voxels, anisotropic (16, 16, 8) patches -> a 16^3 token grid;
    # the conv projector (kernel 2, stride 2) leaves 8^3 = 512 visual tokens (flattening would give 4096).
    "paper": {
        "img_size": (256, 256, 128),
        "patch_size": (16, 16, 8),
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "decoder_dim": 512,
        "decoder_depth": 8,
        "decoder_heads": 16,
        "projector": "conv",
        "projector_kernel": (2, 2, 2),
        "projector_stride": (2, 2, 2),
    },
    # CPU tests and the demo: 32x32x16 voxels, (8, 8, 4) patches -> a 4^3 grid -> 8 visual tokens.
    "tiny": {
        "img_size": (32, 32, 16),
        "patch_size": (8, 8, 4),
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 4,
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 2,
        "projector": "conv",
        "projector_kernel": (2, 2, 2),
        "projector_stride": (2, 2, 2),
    },
}

_VIT_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of the named configuration with ``overrides`` applied (bad names or keys raise)."""
    unknown = sorted(set(overrides) - set(MODEL_CONFIGS["paper"]))
    if unknown:
        raise MedzooDataError(
            "model overrides", repr(unknown), f"keys among {sorted(MODEL_CONFIGS['paper'])}"
        )
    return model_settings(MODEL_CONFIGS, name, **overrides)


def create_vision_encoder(name: str = "paper", **overrides: Any) -> ViT3D:
    """The 3D ViT of a named configuration."""
    config = model_config(name, **overrides)
    return ViT3D(**{k: config[k] for k in _VIT_KEYS})


def create_mae(
    name: str = "paper", mask_ratio: float = 0.75, norm_pix_loss: bool = True, **overrides
) -> MAE3D:
    """The MAE pre-training network of a named configuration."""
    config = model_config(name, **overrides)
    encoder = ViT3D(**{k: config[k] for k in _VIT_KEYS})
    return MAE3D(
        encoder,
        mask_ratio,
        config["decoder_dim"],
        config["decoder_depth"],
        config["decoder_heads"],
        norm_pix_loss,
    )


def create_projector(name: str, vision: ViT3D, out_dim: int, **overrides: Any) -> nn.Module:
    """The projector of a named configuration: "conv" (3D convolutional) or "linear" (flatten baseline)."""
    config = model_config(name, **overrides)
    if config["projector"] == "conv":
        return ConvProjector3D(
            vision.embed_dim,
            out_dim,
            vision.grid_size,
            config["projector_kernel"],
            config["projector_stride"],
        )
    if config["projector"] == "linear":
        return LinearProjector(vision.embed_dim, out_dim, vision.num_patches)
    raise ValueError(f"projector {config['projector']!r}; expected 'conv' or 'linear'")


def create_model(
    name: str = "paper",
    *,
    language_model: nn.Module,
    image_token_id: int,
    trainable_vision_blocks: int = -1,
    **overrides: Any,
) -> CTVLM:
    """A :class:`CTVLM` of a named configuration around an already loaded causal LM."""
    vision = create_vision_encoder(name, **overrides)
    hidden = int(language_model.config.hidden_size)
    projector = create_projector(name, vision, hidden, **overrides)
    return CTVLM(vision, projector, language_model, image_token_id, trainable_vision_blocks)


__all__ = [
    "CTVLM",
    "IGNORE_INDEX",
    "MAE3D",
    "MODEL_CONFIGS",
    "ConvProjector3D",
    "LinearProjector",
    "MAEOutput",
    "ViT3D",
    "apply_lora",
    "conv_output_grid",
    "create_mae",
    "create_model",
    "create_projector",
    "create_vision_encoder",
    "masked_patch_mse",
    "model_config",
    "patchify",
    "random_masking",
    "splice_visual_tokens",
    "unpatchify",
]
