"""The classifier under attack: a timm ResNet with the input normalisation wrapped inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

__all__ = ["NormalizedClassifier"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class NormalizedClassifier(nn.Module):
    """A timm ResNet that takes images in [0, 1] and normalises them itself.

    Attacks work on [0, 1] pixels (their eps is a pixel budget); keeping ``(x - mean) / std`` inside the model
    means the attack never sees normalised tensors.

    Args:
        backbone: a timm model name (e.g. ``"resnet50"``, the paper's), or ``"resnet_custom"`` for a small
            ResNet built from ``block``/``layers``/``channels``/``stem_width`` (the demo's).
        num_classes: output logits.
        in_chans: input channels C.
        mean, std: per-channel normalisation (length ``in_chans``).
        drop_rate: dropout before the classifier (the BU detector samples it with MC dropout).
        pretrained: load timm's pretrained weights (needs them in the local timm/HF cache; nothing downloads
            in tests).
        block, layers, channels, stem_width: the custom ResNet's settings (only for ``"resnet_custom"``).

    Shapes: ``(B, C, H, W)`` in [0, 1] -> logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 2,
        in_chans: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        drop_rate: float = 0.0,
        pretrained: bool = False,
        block: str = "basic",
        layers: Sequence[int] = (1, 1, 1, 1),
        channels: Sequence[int] = (16, 32, 64, 128),
        stem_width: int = 16,
    ) -> None:
        super().__init__()
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std need {in_chans} values (in_chans), got {len(mean)} and {len(std)}")
        if backbone == "resnet_custom":
            if block not in _BLOCKS:
                raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
            self.net = ResNet(
                block=_BLOCKS[block],
                layers=tuple(layers),
                channels=tuple(channels),
                stem_width=stem_width,
                num_classes=num_classes,
                in_chans=in_chans,
                drop_rate=drop_rate,
            )
        else:
            self.net = timm.create_model(
                backbone,
                pretrained=pretrained,
                num_classes=num_classes,
                in_chans=in_chans,
                drop_rate=drop_rate,
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, num_classes) logits."""
        return self.net((x - self.mean) / self.std)
