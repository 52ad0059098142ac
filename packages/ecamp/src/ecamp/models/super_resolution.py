"""ECAMP's context-guided super-resolution head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SuperResolutionHead"]


class SuperResolutionHead(nn.Module):
    """Bilinear x``scale`` upsampling, conv3-ReLU-conv3 with a residual from the upsampled image, then ReLU.

    Input: (B, C, H, W) reconstructed image; output (B, C, scale * H, scale * W).

    Args:
        channels: image channels in and out.
        scale: upsampling factor (ECAMP: 2, from the 224 reconstruction to the 448 target).
    """

    def __init__(self, channels: int = 3, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(image, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return F.relu(self.conv2(F.relu(self.conv1(up))) + up)
