"""Stage 1: the self-supervised domain-adaptive CNN (one VGG19 encoder per domain, one shared decoder).

Given an image of domain ``d`` it returns six 16-d embedding maps at strides 32, 16, 8, 4, 2 and 1; the
contrastive loss and the template matching use the first five.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uod_oneshot.models.layers import DomainUpBlock, ReceptiveFieldBlock, check_domain

__all__ = ["SSL_STRIDES", "UniversalSSLNet", "VGGEncoder"]

SSL_STRIDES = (32, 16, 8, 4, 2, 1)
"""Strides of the six embedding maps that :class:`UniversalSSLNet` returns, coarsest first."""


class VGGEncoder(nn.Module):
    """A VGG feature extractor that returns the output of each of its five max-pools.

    With the default widths and depths this is VGG19 ("configuration E"): its ``features.<i>`` parameter
    names are those of torchvision's and timm's ``vgg19``, so their ImageNet weights load into it.

    Args:
        widths: channels of the five stages.
        depths: 3x3 convs per stage (VGG19: 2, 2, 4, 4, 4).
        in_channels: input channels.

    Shapes: (B, C, H, W) with H, W divisible by 32 -> five maps (B, widths[i], H / 2^(i+1), W / 2^(i+1)).
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        depths: Sequence[int] = (2, 2, 4, 4, 4),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 5:
            raise ValueError(f"VGGEncoder needs 5 stage widths and depths, got {widths} and {depths}")
        layers: list[nn.Module] = []
        channels = in_channels
        for width, depth in zip(widths, depths, strict=True):
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.widths = tuple(widths)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation (used when no ImageNet weights are loaded)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pooled.append(x)
        return pooled


class _SharedUp(nn.Module):
    """Bilinear x2 then (3x3 conv, BN, ReLU) x 2 with a middle width of ``C_in / 2`` (shared by domains)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(in_channels // 2, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class UniversalSSLNet(nn.Module):
    """UOD stage 1: domain-specific VGG encoders, a shared domain-adaptive decoder, multi-scale embeddings.

    - encoder ``d`` (VGG19) gives pooled features at strides 2..32;
    - four :class:`DomainUpBlock` decode stride 32 -> 2 (decoder widths 256, 128, 64, 128 in the paper),
      each with domain-specific depthwise convs and BatchNorm and a shared pointwise conv;
    - a shared bilinear up block gives stride 1;
    - RFB modules refine the three coarsest maps (strides 32, 16, 8);
    - a 1x1 projection per scale gives ``embed_dim``-d embeddings.

    Args:
        num_domains: D.
        encoder_widths, encoder_depths: VGG stages (VGG19: (64, 128, 256, 512, 512), (2, 2, 4, 4, 4)).
        decoder_widths: outputs of the four up blocks.
        embed_dim: embedding length (16).
        use_rfb: the RFB modules (the reference's ``non_local=True``).
        in_channels: image channels (grey images are repeated to 3).

    Shapes: forward((B, C, H, W), domain) with H, W divisible by 32 -> list of six (B, embed_dim, H/s, W/s)
    for s in ``SSL_STRIDES`` = (32, 16, 8, 4, 2, 1).
    """

    def __init__(
        self,
        num_domains: int = 3,
        encoder_widths: Sequence[int] = (64, 128, 256, 512, 512),
        encoder_depths: Sequence[int] = (2, 2, 4, 4, 4),
        decoder_widths: Sequence[int] = (256, 128, 64, 128),
        embed_dim: int = 16,
        use_rfb: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(decoder_widths) != 4:
            raise ValueError(f"decoder_widths needs 4 values, got {decoder_widths}")
        self.num_domains = num_domains
        self.in_channels = in_channels
        self.encoders = nn.ModuleList(
            VGGEncoder(encoder_widths, encoder_depths, in_channels) for _ in range(num_domains)
        )
        skips = list(encoder_widths[::-1])  # strides 32, 16, 8, 4, 2
        inputs = [skips[0], *decoder_widths[:-1]]
        self.decoder = nn.ModuleList(
            DomainUpBlock(x + s, out, num_domains=num_domains)
            for x, s, out in zip(inputs, skips[1:], decoder_widths, strict=True)
        )
        self.final_up = _SharedUp(decoder_widths[-1], decoder_widths[-1])
        level_widths = [skips[0], *decoder_widths, decoder_widths[-1]]
        self.rfb = nn.ModuleList(ReceptiveFieldBlock(c, c) for c in level_widths[:3]) if use_rfb else None
        self.projections = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in level_widths)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor, domain: int = 0) -> list[torch.Tensor]:
        d = check_domain(domain, self.num_domains)
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        pooled = self.encoders[d](x)[::-1]  # strides 32, 16, 8, 4, 2
        levels = [pooled[0]]
        y = pooled[0]
        for block, skip in zip(self.decoder, pooled[1:], strict=True):
            y = block(y, skip, d)
            levels.append(y)
        levels.append(self.final_up(y))
        if self.rfb is not None:
            levels[:3] = [rfb(level) for rfb, level in zip(self.rfb, levels[:3], strict=True)]
        return [proj(level) for proj, level in zip(self.projections, levels, strict=True)]

    def domain_specific_parameters(self, domain: int) -> dict[str, nn.Parameter]:
        """The parameters that only domain ``domain`` uses (its encoder, depthwise convs and BatchNorms)."""
        return _domain_parameters(self, domain)


def _domain_parameters(model: nn.Module, domain: int) -> dict[str, nn.Parameter]:
    """Parameters under a ModuleList/ParameterList index ``domain`` of a per-domain container."""
    out = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        for i, part in enumerate(parts[:-1]):
            if part in _PER_DOMAIN_CONTAINERS and parts[i + 1] == str(domain):
                out[name] = param
                break
    return out


_PER_DOMAIN_CONTAINERS = {
    "encoders",
    "depthwise1",
    "depthwise2",
    "norm1",
    "norm2",
    "q",
    "mlp",
    "gamma1",
    "gamma2",
    "heads",
}
