"""Domain-adaptive convolution blocks shared by both UOD networks, and the RFB context module.

A *domain-adaptive* layer keeps one copy of some parameters per domain (head, hand, chest ...) and shares the
rest. Every ``forward`` takes ``domain: int``; only that domain's copy is used, so a step on domain A leaves
domain B's specific parameters untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicConv", "DomainDoubleConv", "DomainUpBlock", "ReceptiveFieldBlock", "check_domain"]


def check_domain(domain: int, num_domains: int) -> int:
    """``domain`` as an int in ``[0, num_domains)``; a clear error otherwise."""
    domain = int(domain)
    if not 0 <= domain < num_domains:
        raise IndexError(f"domain index {domain} out of range: the network has {num_domains} domains")
    return domain


class DomainDoubleConv(nn.Module):
    """``(depthwise 3x3 [domain] -> pointwise 1x1 [shared] -> BatchNorm [domain] -> ReLU) x 2``.

    The UOD domain-adaptive convolution: the spatial filtering and the normalisation statistics are
    domain-specific, the channel mixing (most of the parameters) is shared.

    Args:
        in_channels, out_channels: C_in and C_out.
        mid_channels: channels after the first pointwise conv (default ``out_channels``).
        num_domains: D.

    Shapes: (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int | None = None, num_domains: int = 1
    ) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels
        self.num_domains = num_domains
        self.depthwise1 = nn.ModuleList(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels) for _ in range(num_domains)
        )
        self.pointwise1 = nn.Conv2d(in_channels, mid_channels, 1)
        self.norm1 = nn.ModuleList(nn.BatchNorm2d(mid_channels) for _ in range(num_domains))
        self.depthwise2 = nn.ModuleList(
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1, groups=mid_channels)
            for _ in range(num_domains)
        )
        self.pointwise2 = nn.Conv2d(mid_channels, out_channels, 1)
        self.norm2 = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(num_domains))

    def forward(self, x: torch.Tensor, domain: int = 0) -> torch.Tensor:
        d = check_domain(domain, self.num_domains)
        x = F.relu(self.norm1[d](self.pointwise1(self.depthwise1[d](x))))
        return F.relu(self.norm2[d](self.pointwise2(self.depthwise2[d](x))))


class DomainUpBlock(nn.Module):
    """Bilinear x2 upsampling (``align_corners=True``), size-match to the skip, concat, DomainDoubleConv.

    The upsampled map is padded (or, where it is larger, cropped: negative padding) symmetrically to the
    skip's size, as in the reference's ``Up``; DATR's first block uses this to fuse the stride-32 map with
    itself.

    Args:
        in_channels: channels of ``cat(skip, upsampled)``.
        out_channels: C_out.
        mid_channels: DoubleConv middle width (default ``out_channels``).
        num_domains: D.
        skip_first: concatenation order ``cat(skip, x)`` (DATR) instead of ``cat(x, skip)`` (stage 1).

    Shapes: x (B, C_x, h, w), skip (B, C_s, H, W) with C_x + C_s = in_channels -> (B, C_out, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        num_domains: int = 1,
        skip_first: bool = False,
    ) -> None:
        super().__init__()
        self.conv = DomainDoubleConv(in_channels, out_channels, mid_channels, num_domains)
        self.skip_first = skip_first

    def forward(self, x: torch.Tensor, skip: torch.Tensor, domain: int = 0) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        x = torch.cat([skip, x] if self.skip_first else [x, skip], dim=1)
        return self.conv(x, domain)


class BasicConv(nn.Sequential):
    """Conv (no bias) + BatchNorm, no activation (RFB's ``BasicConv2d``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ReceptiveFieldBlock(nn.Module):
    """The modified Receptive Field Block (RFB, Liu et al. ECCV 2018) that UOD puts on its coarsest levels.

    Four branches (1x1; 1x3/3x1 + dilated 3x3 with dilation 3; 1x5/5x1 + dilation 5; 1x7/7x1 + dilation 7),
    concatenated, fused by a 3x3 conv, plus a 1x1 residual projection, then ReLU.

    Shapes: (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()

        def branch(k: int) -> nn.Sequential:
            return nn.Sequential(
                BasicConv(in_channels, out_channels, 1),
                BasicConv(out_channels, out_channels, (1, k), padding=(0, k // 2)),
                BasicConv(out_channels, out_channels, (k, 1), padding=(k // 2, 0)),
                BasicConv(out_channels, out_channels, 3, padding=k, dilation=k),
            )

        self.branches = nn.ModuleList(
            [BasicConv(in_channels, out_channels, 1), branch(3), branch(5), branch(7)]
        )
        self.fuse = BasicConv(4 * out_channels, out_channels, 3, padding=1)
        self.residual = BasicConv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fuse(torch.cat([b(x) for b in self.branches], dim=1))
        return F.relu(fused + self.residual(x))
