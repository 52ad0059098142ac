"""Stage 2: DATR, the domain-adaptive transformer (a Swin encoder with domain-specific parts + conv decoder).

Domain-specific: the query projection, the FFN (MLP), the optional layer-scale gammas, the decoder's
depthwise convs and BatchNorms, and the 1x1 heads (one per domain, with that domain's number of landmarks).
Shared: patch embedding, key/value projections, attention output projection, relative position biases,
LayerNorms, patch merging and the decoder's pointwise convs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse
from torch import nn

from uod_oneshot.models.layers import DomainUpBlock, check_domain
from uod_oneshot.models.ssl_net import _domain_parameters

__all__ = ["DATR", "DomainSwinBlock", "DomainSwinEncoder", "DomainWindowAttention"]


class DomainWindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias and a domain-specific query.

    Args:
        dim: C.
        num_heads: heads (C divisible by it).
        window_size: Wh = Ww.
        num_domains: D (one query projection each).

    Shapes: x (B*nW, N, C) with N = window_size^2; mask (nW, N, N) of 0 / -inf or None -> (B*nW, N, C).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, num_domains: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_domains))
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer(
            "relative_position_index", get_relative_position_index(window_size, window_size), persistent=False
        )
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, domain: int = 0) -> torch.Tensor:
        windows, tokens, channels = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B*nW, N, C) -> (B*nW, heads, N, C / heads)
            return t.reshape(windows, tokens, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q[domain](x)), heads(self.k(x)), heads(self.v(x))
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(tokens, tokens, -1).permute(2, 0, 1)[None]
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, self.num_heads, tokens, tokens) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, tokens, tokens)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(windows, tokens, channels)
        return self.proj(x)


class _FeedForward(nn.Sequential):
    """Linear -> GELU (tanh approximation, as the reference's GELU) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class DomainSwinBlock(nn.Module):
    """A Swin block (W-MSA or shifted SW-MSA) with domain-specific query, FFN and layer-scale.

    Without layer scale: ``x = x + dp(attn(ln1(x)))``; ``x = x + dp(ffn_d(ln2(x)))``. With layer scale
    (``layer_scale_init``), as in the reference: ``x = x + dp(gamma1_d * attn)``;
    ``x = gamma2_d * (x + dp(ffn_d(ln2(x))))`` (gamma2 scales the whole residual stream).

    Args:
        dim, num_heads, window_size: as in Swin.
        shift: cyclic shift (``window_size // 2`` for odd blocks, 0 otherwise).
        mlp_ratio: FFN hidden width / dim.
        drop_path: stochastic depth rate.
        num_domains: D.
        layer_scale_init: initial gamma value (the reference uses 1e-4) or ``None`` (no layer scale).

    Shapes: x (B, H, W, C) -> (B, H, W, C); H, W need not be multiples of the window (padded).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: int = 0,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        num_domains: int = 1,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = DomainWindowAttention(dim, num_heads, window_size, num_domains)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.ModuleList(_FeedForward(dim, int(dim * mlp_ratio)) for _ in range(num_domains))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.gamma1 = self.gamma2 = None
        if layer_scale_init is not None:
            self.gamma1 = nn.ParameterList(
                nn.Parameter(torch.full((dim,), float(layer_scale_init))) for _ in range(num_domains)
            )
            self.gamma2 = nn.ParameterList(
                nn.Parameter(torch.full((dim,), float(layer_scale_init))) for _ in range(num_domains)
            )

    def _shift_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """(nW, N, N) mask that stops attention across the seams of the cyclic shift."""
        if not self.shift:
            return None
        w, s = self.window_size, self.shift
        region = torch.zeros(1, height, width, 1, device=device)
        label = 0
        for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
                region[:, hs, ws, :] = label
                label += 1
        windows = window_partition(region, (w, w)).view(-1, w * w)
        mask = windows[:, None, :] - windows[:, :, None]
        return mask.masked_fill(mask != 0, float("-inf")).masked_fill(mask == 0, 0.0)

    def forward(self, x: torch.Tensor, domain: int = 0) -> torch.Tensor:
        _, height, width, channels = x.shape
        w = self.window_size
        y = self.attn_norm(x)
        pad_h, pad_w = (-height) % w, (-width) % w
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = height + pad_h, width + pad_w
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(y, (w, w)).view(-1, w * w, channels)
        windows = self.attn(windows, self._shift_mask(hp, wp, x.device), domain)
        y = window_reverse(windows.view(-1, w, w, channels), (w, w), hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :height, :width, :]
        if self.gamma1 is not None:
            x = x + self.drop_path(self.gamma1[domain] * y)
            return self.gamma2[domain] * (x + self.drop_path(self.mlp[domain](self.mlp_norm(x))))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp[domain](self.mlp_norm(x)))


class _PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> LayerNorm -> Linear(4C, 2C) (Swin's down-sampling; odd sizes padded)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class DomainSwinEncoder(nn.Module):
    """Swin Transformer encoder with domain-adaptive blocks; returns the four stage outputs.

    Args:
        num_domains: D.
        embed_dim: C of stage 1 (Swin-B: 128).
        depths: blocks per stage (Swin-B: 2, 2, 18, 2).
        num_heads: heads per stage (Swin-B: 4, 8, 16, 32).
        window_size: 7.
        mlp_ratio: 4.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        patch_size: 4.
        in_channels: 3.
        layer_scale_init: see :class:`DomainSwinBlock`.

    Shapes: (B, 3, H, W) -> [(B, C * 2^i, H / (4 * 2^i), W / (4 * 2^i)) for i in 0..3] (ceil division).
    """

    def __init__(
        self,
        num_domains: int = 3,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.5,
        patch_size: int = 4,
        in_channels: int = 3,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.out_norms = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            dim = embed_dim * 2**i
            self.stages.append(
                nn.ModuleList(
                    DomainSwinBlock(
                        dim,
                        heads,
                        window_size,
                        shift=0 if j % 2 == 0 else window_size // 2,
                        mlp_ratio=mlp_ratio,
                        drop_path=rates[start + j],
                        num_domains=num_domains,
                        layer_scale_init=layer_scale_init,
                    )
                    for j in range(depth)
                )
            )
            start += depth
            self.out_norms.append(nn.LayerNorm(dim))
            self.merges.append(_PatchMerging(dim) if i < len(depths) - 1 else nn.Identity())
        self.embed_dim = embed_dim
        self.num_stages = len(depths)

    def forward(self, x: torch.Tensor, domain: int = 0) -> list[torch.Tensor]:
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)
        outputs = []
        for blocks, norm, merge in zip(self.stages, self.out_norms, self.merges, strict=True):
            for block in blocks:
                x = block(x, domain)
            outputs.append(norm(x).permute(0, 3, 1, 2).contiguous())
            x = merge(x)
        return outputs


class DATR(nn.Module):
    """The domain-adaptive transformer of UOD: Swin encoder, 4 domain-adaptive up blocks, per-domain heads.

    Decoder (reference ``ConvDecoder``): block 0 fuses the stride-32 map with its own x2 upsampling (cropped
    back to stride 32), blocks 1-3 climb to stride 4 with the encoder's skips; a per-domain 1x1 head gives
    one map per landmark, bilinearly upsampled to the input size, then a sigmoid.

    Args:
        num_landmarks: landmarks of each domain, e.g. (19, 37, 6); D = its length.
        embed_dim, depths, num_heads, window_size, mlp_ratio, drop_path_rate, layer_scale_init: encoder.
        decoder_width: channels of the last up block (64).

    Shapes: forward((B, 3, H, W), domain) -> (B, num_landmarks[domain], H, W) heatmaps in (0, 1).
    """

    def __init__(
        self,
        num_landmarks: Sequence[int] = (19, 37, 6),
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.5,
        layer_scale_init: float | None = None,
        decoder_width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"DATR's decoder expects 4 encoder stages, got depths {depths}")
        self.num_landmarks = tuple(int(k) for k in num_landmarks)
        self.num_domains = len(self.num_landmarks)
        self.in_channels = in_channels
        self.encoder = DomainSwinEncoder(
            self.num_domains,
            embed_dim,
            depths,
            num_heads,
            window_size,
            mlp_ratio,
            drop_path_rate,
            in_channels=in_channels,
            layer_scale_init=layer_scale_init,
        )
        c, d = embed_dim, self.num_domains
        self.decoder = nn.ModuleList(
            [
                DomainUpBlock(16 * c, 4 * c, 8 * c, d, skip_first=True),
                DomainUpBlock(8 * c, 2 * c, 4 * c, d, skip_first=True),
                DomainUpBlock(4 * c, c, 2 * c, d, skip_first=True),
                DomainUpBlock(2 * c, decoder_width, c, d, skip_first=True),
            ]
        )
        self.heads = nn.ModuleList(nn.Conv2d(decoder_width, k, 1) for k in self.num_landmarks)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference's ``weight_init``: Kaiming-normal (fan-in) convs and linears, zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor, domain: int = 0) -> torch.Tensor:
        """(B, 3, H, W) -> (B, decoder_width, ceil(H/4), ceil(W/4)) decoder features."""
        feats = self.encoder(x, domain)
        y = feats[-1]
        for block, skip in zip(self.decoder, feats[::-1], strict=True):
            y = block(y, skip, domain)
        return y

    def forward(self, x: torch.Tensor, domain: int = 0) -> torch.Tensor:
        d = check_domain(domain, self.num_domains)
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        logits = self.heads[d](self.forward_features(x, d))
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return torch.sigmoid(logits)

    def domain_specific_parameters(self, domain: int) -> dict[str, nn.Parameter]:
        """The parameters that only domain ``domain`` uses."""
        return _domain_parameters(self, domain)
