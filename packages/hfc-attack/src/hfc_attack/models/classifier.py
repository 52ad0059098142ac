"""The classifier under attack: a timm ResNet (2D) or a MONAI ResNet (3D volumes), with the input
normalisation wrapped inside the model."""

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
# MONAI ResNets (any spatial_dims; 3 for volumes): name -> (block, blocks per stage, stage widths).
_MONAI_RESNETS = {
    "monai_resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "monai_resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
}


def _monai_resnet(
    backbone: str,
    spatial_dims: int,
    in_chans: int,
    block: str,
    layers: Sequence[int],
    channels: Sequence[int],
    conv1_size: int,
    conv1_stride: int,
) -> tuple[nn.Module, int]:
    """A MONAI ResNet without its fc (it returns pooled features) and its feature width."""
    from monai.networks.nets import ResNet as MonaiResNet

    if backbone != "monai_resnet_custom":
        block, layers, channels = _MONAI_RESNETS[backbone]
    if block not in _BLOCKS:
        raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
    net = MonaiResNet(
        block=block,
        layers=list(layers),
        block_inplanes=list(channels),
        spatial_dims=spatial_dims,
        n_input_channels=in_chans,
        conv1_t_size=conv1_size,
        conv1_t_stride=conv1_stride,
        feed_forward=False,
    )
    return net, int(channels[-1]) * (4 if block == "bottleneck" else 1)


class NormalizedClassifier(nn.Module):
    """A timm ResNet (2D) or MONAI ResNet (2D/3D) that takes inputs in [0, 1] and normalises them itself.

    Attacks work on [0, 1] pixels (their eps is a pixel budget); keeping ``(x - mean) / std`` inside the model
    means the attack never sees normalised tensors.

    Args:
        backbone: a timm model name (e.g. ``"resnet50"``, the paper's), or ``"resnet_custom"`` for a small
            ResNet built from ``block``/``layers``/``channels``/``stem_width`` (the demo's); or a MONAI
            ResNet: ``"monai_resnet18"``, ``"monai_resnet50"`` or ``"monai_resnet_custom"``
            (``block``/``layers``/``channels``), with ``spatial_dims`` 3 for volumes, then dropout and a
            linear head.
        num_classes: output logits.
        in_chans: input channels C.
        mean, std: per-channel normalisation (length ``in_chans``).
        drop_rate: dropout before the classifier (the BU detector samples it with MC dropout).
        pretrained: load timm's pretrained weights (needs them in the local timm/HF cache; nothing downloads
            in tests).
        block, layers, channels, stem_width: the custom ResNet's settings (only for the ``*_custom``
            backbones; ``stem_width`` only for timm).
        spatial_dims: 2 (images) or 3 (volumes, MONAI backbones only).
        conv1_size, conv1_stride: the MONAI stem convolution's kernel size and stride.

    Shapes: ``(B, C, H, W)`` (or ``(B, C, D, H, W)`` with ``spatial_dims=3``) in [0, 1] -> logits
    ``(B, num_classes)``.
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
        spatial_dims: int = 2,
        conv1_size: int = 7,
        conv1_stride: int = 2,
    ) -> None:
        super().__init__()
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std need {in_chans} values (in_chans), got {len(mean)} and {len(std)}")
        monai = backbone.startswith("monai_")
        if monai and backbone not in (*_MONAI_RESNETS, "monai_resnet_custom"):
            raise ValueError(
                f"MONAI backbones: {', '.join(_MONAI_RESNETS)}, monai_resnet_custom; got {backbone!r}"
            )
        if spatial_dims not in (2, 3) or (spatial_dims == 3 and not monai):
            raise ValueError(f"spatial_dims must be 2, or 3 with a monai_* backbone; got {spatial_dims}")
        if monai:
            if pretrained:
                raise ValueError("pretrained weights are not available for the MONAI backbones here")
            features, width = _monai_resnet(
                backbone, spatial_dims, in_chans, block, layers, channels, conv1_size, conv1_stride
            )
            self.net = nn.Sequential(features, nn.Dropout(drop_rate), nn.Linear(width, num_classes))
        elif backbone == "resnet_custom":
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
        self.spatial_dims = spatial_dims
        shape = (1, -1) + (1,) * spatial_dims
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) (or (B, C, D, H, W) for spatial_dims=3) in [0, 1] -> (B, num_classes) logits."""
        if x.dim() != 2 + self.spatial_dims:
            raise ValueError(
                f"a {self.spatial_dims}D classifier takes {2 + self.spatial_dims}D (B, C, ...) inputs;"
                f" got shape {tuple(x.shape)}"
            )
        return self.net((x - self.mean) / self.std)
