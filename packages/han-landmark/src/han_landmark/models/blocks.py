"""Building blocks of the HAN backbone: the BiFormer block, CBAM and the convolutional attention block."""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from han_landmark.models.attention import BiLevelRoutingAttention


class BiFormerBlock(nn.Module):
    """BiFormer block: depthwise-conv position embedding, then pre-norm BRA and MLP with residuals.

    ``x = x + dwconv3x3(x); x = x + BRA(LN(x)); x = x + MLP(LN(x))``.

    Args:
        dim: channels C.
        num_heads, n_win, topk, kv_per_win, qk_scale, side_dwconv, auto_pad, lepe_on, qkv_bias: see
            :class:`BiLevelRoutingAttention`.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        drop_path: stochastic-depth rate of both residual branches.
        layer_norm_eps: LayerNorm epsilon (1e-6 as in BiFormer).

    Shapes:
        input ``(B, C, H, W)``, output ``(B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        n_win: int = 7,
        topk: int = 4,
        kv_per_win: int | None = 4,
        qk_scale: float | None = None,
        side_dwconv: int = 5,
        auto_pad: bool = True,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_norm_eps: float = 1e-6,
        lepe_on: str = "value",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = BiLevelRoutingAttention(
            dim,
            num_heads=num_heads,
            n_win=n_win,
            topk=topk,
            kv_per_win=kv_per_win,
            qk_scale=qk_scale,
            side_dwconv=side_dwconv,
            auto_pad=auto_pad,
            lepe_on=lepe_on,
            qkv_bias=qkv_bias,
        )
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C): LayerNorm and BRA work channels-last
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """CBAM channel gate: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, a shared two-layer MLP.

    Shapes: input ``(B, C, H, W)``; :meth:`gate` returns ``(B, C, 1, 1)`` in (0, 1); forward returns
    ``x * gate``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    """CBAM spatial gate: ``sigmoid(conv_kxk([mean_c(x), max_c(x)]))``.

    Shapes: input ``(B, C, H, W)``; :meth:`gate` returns ``(B, 1, H, W)`` in (0, 1).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel gate, then spatial gate.

    Args:
        channels: C.
        reduction: channel-MLP reduction ratio (16 in HAN).
        spatial_kernel: kernel of the spatial gate conv (7 in HAN).

    Shapes: input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class ConvAttentionBlock(nn.Module):
    """CAB, HAN's convolutional attention block ("Attention Residual Module" in the paper's v2).

    ``ReLU(CBAM(BN(dilconv3x3_d2(ReLU(BN(conv3x3(x)))))) + conv3x3(x))``.

    Args:
        in_channels, out_channels: C_in and C_out.
        dilation: dilation of the second conv (2 in HAN).
        reduction, spatial_kernel: see :class:`CBAM`.
        shortcut_bias: bias of the shortcut conv (the reference has none).

    Shapes: input ``(B, C_in, H, W)``, output ``(B, C_out, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        dilation: int = 2,
        reduction: int = 16,
        spatial_kernel: int = 7,
        shortcut_bias: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.cbam = CBAM(out_channels, reduction, spatial_kernel)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=shortcut_bias)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.cbam(self.branch(x)) + self.shortcut(x))
