"""UOD networks: plain ``torch.nn`` modules, no I/O and no Lightning.

- :class:`DATR` (stage 2, the detector): ``MODEL_CONFIGS`` / :func:`create_model`;
- :class:`UniversalSSLNet` (stage 1, self-supervised embeddings): ``SSL_MODEL_CONFIGS`` /
  :func:`create_ssl_model`.
"""

from __future__ import annotations

from typing import Any

from medzoo.models import build_model
from uod_oneshot.models.datr import DATR, DomainSwinBlock, DomainSwinEncoder, DomainWindowAttention
from uod_oneshot.models.layers import DomainDoubleConv, DomainUpBlock, ReceptiveFieldBlock
from uod_oneshot.models.ssl_net import SSL_STRIDES, UniversalSSLNet, VGGEncoder

__all__ = [
    "DATR",
    "MODEL_CONFIGS",
    "SSL_MODEL_CONFIGS",
    "SSL_STRIDES",
    "DomainDoubleConv",
    "DomainSwinBlock",
    "DomainSwinEncoder",
    "DomainUpBlock",
    "DomainWindowAttention",
    "ReceptiveFieldBlock",
    "UniversalSSLNet",
    "VGGEncoder",
    "create_model",
    "create_ssl_model",
]

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # Swin-B as in the paper and the reference's argparse default (its config.yaml names Swin-S).
    "paper": {
        "num_landmarks": (19, 37, 6),
        "embed_dim": 128,
        "depths": (2, 2, 18, 2),
        "num_heads": (4, 8, 16, 32),
        "window_size": 7,
        "mlp_ratio": 4.0,
        "drop_path_rate": 0.5,
        "layer_scale_init": None,
        "decoder_width": 64,
    },
    "tiny": {
        "num_landmarks": (6, 8),
        "embed_dim": 16,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 2, 4),
        "window_size": 4,
        "mlp_ratio": 2.0,
        "drop_path_rate": 0.0,
        "layer_scale_init": None,
        "decoder_width": 16,
    },
}
"""Named DATR settings; ``paper`` is Swin-B with the reference's decoder."""

SSL_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {
        "num_domains": 3,
        "encoder_widths": (64, 128, 256, 512, 512),
        "encoder_depths": (2, 2, 4, 4, 4),
        "decoder_widths": (256, 128, 64, 128),
        "embed_dim": 16,
        "use_rfb": True,
    },
    "tiny": {
        "num_domains": 2,
        "encoder_widths": (16, 32, 32, 64, 64),
        "encoder_depths": (1, 1, 2, 2, 2),
        "decoder_widths": (32, 32, 16, 16),
        "embed_dim": 16,
        "use_rfb": True,
    },
}
"""Named stage-1 settings; ``paper`` is VGG19 encoders with the reference's decoder widths."""


def create_model(name: str = "paper", **overrides: Any) -> DATR:
    """A :class:`DATR` from ``MODEL_CONFIGS[name]`` with ``overrides`` (e.g. ``num_landmarks=(19, 6)``)."""
    return build_model(MODEL_CONFIGS, DATR, name, **overrides)


def create_ssl_model(name: str = "paper", **overrides: Any) -> UniversalSSLNet:
    """A :class:`UniversalSSLNet` from ``SSL_MODEL_CONFIGS[name]`` with ``overrides``."""
    return build_model(SSL_MODEL_CONFIGS, UniversalSSLNet, name, **overrides)
