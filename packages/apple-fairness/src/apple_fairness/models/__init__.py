"""APPLE's networks (plain torch, no I/O, no Lightning) and their named configurations.

A configuration names the deployed segmentor (``segmentor`` from :data:`SEGMENTORS` and its
``segmentor_args``) and APPLE's perturber / discriminator settings. ``paper*`` are the paper's five
segmentors at full size (U-Net, Attention U-Net, CMUNeXt, SAMed-style and MedSAM-style SAM);
``tiny*`` are the same families small enough for CPU tests and the demo.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from apple_fairness.models.apple import APPLE, AttributeDiscriminator, LatentPerturber
from apple_fairness.models.segmentors import (
    AttentionUNetSegmentor,
    CMUNeXtBlock,
    CMUNeXtSegmentor,
    SAMSegmentor,
    Segmentor,
    UNetSegmentor,
    segmentor_summary,
)
from medzoo.models import build_model, model_settings

__all__ = [
    "APPLE",
    "MODEL_CONFIGS",
    "SEGMENTORS",
    "AttentionUNetSegmentor",
    "AttributeDiscriminator",
    "CMUNeXtBlock",
    "CMUNeXtSegmentor",
    "LatentPerturber",
    "SAMSegmentor",
    "Segmentor",
    "UNetSegmentor",
    "build_apple",
    "create_model",
    "create_segmentor",
    "segmentor_summary",
]

SEGMENTORS: dict[str, Any] = {
    "unet": UNetSegmentor,
    "attention_unet": AttentionUNetSegmentor,
    "cmunext": CMUNeXtSegmentor,
    "samed": partial(SAMSegmentor, prompt="none"),
    "medsam": partial(SAMSegmentor, prompt="box"),
}

# APPLE's own parts, the same for every segmentor unless a config overrides them. The paper gives no
# sizes for G_p and D_p ("a small latent feature perturber"); these are our choices (README).
_APPLE_PAPER = {
    "num_groups": 2,
    "perturb_skips": False,
    "perturber_hidden": 256,
    "perturber_depth": 2,
    "delta_bound": 1.0,
    "discriminator_hidden": 256,
    "discriminator_depth": 2,
}
_APPLE_TINY = {**_APPLE_PAPER, "perturber_hidden": 32, "discriminator_hidden": 32}

_UNET_PAPER = {"channels": (32, 64, 128, 256, 512), "strides": (2, 2, 2, 2), "num_res_units": 2}
_UNET_TINY = {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1}
_SAM_PAPER = {"image_size": 1024, "patch_size": 16, "hidden_size": 768, "num_layers": 12, "num_heads": 12}
_SAM_TINY = {
    "image_size": 64,
    "patch_size": 8,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "window_size": 4,
    "global_attn_indexes": (1,),
    "embed_dim": 32,
}


def _config(segmentor: str, args: dict[str, Any], apple: dict[str, Any], classes: int = 2) -> dict[str, Any]:
    return {"segmentor": segmentor, "segmentor_args": {"num_classes": classes, **args}, **apple}


MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": _config("unet", _UNET_PAPER, _APPLE_PAPER),
    "paper_attention_unet": _config("attention_unet", {"channels": _UNET_PAPER["channels"]}, _APPLE_PAPER),
    "paper_cmunext": _config("cmunext", {}, _APPLE_PAPER),
    "paper_samed": _config("samed", _SAM_PAPER, _APPLE_PAPER),
    "paper_medsam": _config("medsam", _SAM_PAPER, _APPLE_PAPER),
    "tiny": _config("unet", _UNET_TINY, _APPLE_TINY),
    "tiny_attention_unet": _config(
        "attention_unet", {"channels": (8, 16, 32, 64), "strides": (2, 2, 2)}, _APPLE_TINY
    ),
    "tiny_cmunext": _config(
        "cmunext",
        {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1), "kernel_sizes": (3, 3, 7, 7)},
        _APPLE_TINY,
    ),
    "tiny_samed": _config("samed", _SAM_TINY, _APPLE_TINY),
    "tiny_medsam": _config("medsam", _SAM_TINY, _APPLE_TINY),
}


def create_segmentor(name: str = "paper", **segmentor_args: Any) -> Segmentor:
    """The deployed segmentor of the named configuration (``segmentor_args`` override its arguments)."""
    settings = model_settings(MODEL_CONFIGS, name)
    kind = settings["segmentor"]
    if kind not in SEGMENTORS:
        from medzoo.errors import MedzooDataError

        raise MedzooDataError(
            f"model variant {name!r}", f"segmentor {kind!r}", f"one of {sorted(SEGMENTORS)}"
        )
    return SEGMENTORS[kind](**{**settings["segmentor_args"], **segmentor_args})


def build_apple(
    segmentor: str = "unet",
    segmentor_args: dict[str, Any] | None = None,
    num_groups: int = 2,
    perturb_skips: bool = False,
    perturber_hidden: int = 64,
    perturber_depth: int = 2,
    perturber_norm: str = "group",
    delta_bound: float = 1.0,
    discriminator_hidden: int = 64,
    discriminator_depth: int = 2,
    discriminator_norm: str = "group",
) -> APPLE:
    """An :class:`APPLE` model around a freshly built segmentor (load its trained weights afterwards)."""
    if segmentor not in SEGMENTORS:
        from medzoo.errors import MedzooDataError

        raise MedzooDataError("segmentor", repr(segmentor), f"one of {sorted(SEGMENTORS)}")
    net = SEGMENTORS[segmentor](**(segmentor_args or {}))
    return APPLE(
        net,
        num_groups=num_groups,
        perturb_skips=perturb_skips,
        perturber_hidden=perturber_hidden,
        perturber_depth=perturber_depth,
        perturber_norm=perturber_norm,
        delta_bound=delta_bound,
        discriminator_hidden=discriminator_hidden,
        discriminator_depth=discriminator_depth,
        discriminator_norm=discriminator_norm,
    )


def create_model(name: str = "paper", **overrides: Any) -> APPLE:
    """The APPLE model of a named configuration, e.g. ``create_model("tiny", delta_bound=0.5)``.

    ``segmentor_args`` in ``overrides`` is merged into the configuration's (not replacing it).
    """
    if "segmentor_args" in overrides:
        base = model_settings(MODEL_CONFIGS, name)["segmentor_args"]
        overrides = {**overrides, "segmentor_args": {**base, **overrides["segmentor_args"]}}
    return build_model(MODEL_CONFIGS, build_apple, name, **overrides)
