"""Bi-Level Routing Attention (BRA), the sparse attention of BiFormer (Zhu et al., CVPR 2023) used by HAN.

BRA splits the token grid into ``n_win x n_win`` regions. A coarse region-to-region affinity (mean query of a
region against mean key of every region) picks, for each query region, the ``topk`` most related regions; the
tokens of a query region then attend only to the (pooled) keys and values of those regions.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

GLOBAL_ATTENTION = -2
"""``topk`` value meaning "no routing: full global multi-head attention" (HAN's fifth stage)."""


def _region_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, size)``; a plain average pool when the region divides evenly, which computes
    the same and also exports to ONNX with a dynamic batch."""
    height, width = x.shape[-2:]
    if height % size == 0 and width % size == 0:
        return F.avg_pool2d(x, (height // size, width // size))
    return F.adaptive_avg_pool2d(x, size)


class BiLevelRoutingAttention(nn.Module):
    """Bi-Level Routing Attention on a channels-last token grid.

    Args:
        dim: channels C of the input and output.
        num_heads: attention heads; ``qk_dim`` and ``dim`` must divide by it.
        n_win: number of regions PER SIDE (the grid has ``n_win**2`` regions), not a window size.
        topk: regions each query region attends to. ``-2`` (:data:`GLOBAL_ATTENTION`) skips routing and
            runs full global attention over all tokens (HAN stage 5); ``n_win**2`` routes to every region.
        kv_per_win: keys/values of each region are adaptive-average-pooled to ``kv_per_win x kv_per_win``
            tokens before attention; ``None`` keeps every token of the region (no pooling).
        qk_dim: width of queries and keys; defaults to ``dim``.
        qk_scale: softmax temperature. ``None`` follows the reference implementation: ``qk_dim ** -0.5``
            (the FULL query width, not the per-head width) for routed attention, and ``head_dim ** -0.5``
            for global attention (``topk=-2``). Pass ``(qk_dim // num_heads) ** -0.5`` for the textbook
            per-head scale.
        side_dwconv: kernel of the depthwise conv that forms the local positional enhancement (LePE) added
            to the attention output; ``0`` disables LePE.
        lepe_on: what the LePE conv reads: ``"value"`` (V, as BiFormer's routed attention) or ``"input"``
            (the attention's input tokens, as BiFormer's ``AttentionLePE``, which the reference uses for its
            global stage 5).
        qkv_bias: bias of the q/k/v projection (BiFormer's routed attention has one, ``AttentionLePE`` not).
        auto_pad: zero-pad H and W (bottom/right) up to multiples of ``n_win`` and crop the output back;
            when False a non-divisible input raises ``ValueError``.
        fused_attention: use ``torch.nn.functional.scaled_dot_product_attention``; False materialises the
            attention matrix explicitly (used by the benchmark to compare like with like).

    Shapes:
        input ``(B, H, W, C)`` float, output ``(B, H, W, C)``.

    The routing (region affinities and top-k choice) is computed on detached tensors, as in BiFormer: the
    top-k selection is not differentiable, and gradients reach q/k only through the token-level attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        n_win: int = 7,
        topk: int = 4,
        kv_per_win: int | None = 4,
        qk_dim: int | None = None,
        qk_scale: float | None = None,
        side_dwconv: int = 5,
        auto_pad: bool = True,
        fused_attention: bool = True,
        lepe_on: Literal["value", "input"] = "value",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        qk_dim = qk_dim or dim
        if qk_dim % num_heads or dim % num_heads:
            raise ValueError(f"qk_dim={qk_dim} and dim={dim} must be divisible by num_heads={num_heads}")
        if topk != GLOBAL_ATTENTION and not 1 <= topk <= n_win**2:
            raise ValueError(f"topk={topk}: expected -2 (global) or 1..n_win**2={n_win**2}")
        if lepe_on not in ("value", "input"):
            raise ValueError(f"lepe_on={lepe_on!r}: expected 'value' or 'input'")
        self.lepe_on = lepe_on
        self.dim, self.qk_dim, self.num_heads = dim, qk_dim, num_heads
        self.n_win, self.topk, self.kv_per_win = n_win, topk, kv_per_win
        self.auto_pad, self.fused_attention = auto_pad, fused_attention
        head_dim = qk_dim // num_heads
        if qk_scale is None:
            qk_scale = head_dim**-0.5 if topk == GLOBAL_ATTENTION else qk_dim**-0.5
        self.scale = qk_scale
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, bias=qkv_bias)  # [q | k | v]
        self.proj = nn.Linear(dim, dim)
        self.lepe = (
            nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
            if side_dwconv > 0
            else None
        )

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T * scale) v over the last two dims; q (..., Nq, d), k/v (..., Nk, d)."""
        if self.fused_attention:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        return attn.softmax(dim=-1) @ v

    def _lepe(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
        """LePE: depthwise conv on V or on the input (see ``lepe_on``); (B, H, W, C) -> (B, H, W, C)."""
        if self.lepe is None:
            return None
        source = x if self.lepe_on == "input" else v
        return self.lepe(source.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def _global_attention(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        # tokens -> heads: (B, m, H*W, d)
        q, k, v = (rearrange(t, "b h w (m d) -> b m (h w) d", m=self.num_heads) for t in (q, k, v))
        lepe = self._lepe(x, rearrange(v, "b m (h w) d -> b h w (m d)", h=height, w=width))
        out = rearrange(self._attend(q, k, v), "b m (h w) d -> b h w (m d)", h=height, w=width)
        if lepe is not None:
            out = out + lepe
        return self.proj(out)

    def route(self, q_regions: torch.Tensor, k_regions: torch.Tensor) -> torch.Tensor:
        """Top-k region indices from region-mean affinities.

        Args:
            q_regions, k_regions: (B, R, T, c) queries/keys grouped by region (R regions of T tokens).

        Returns:
            (B, R, topk) long indices of the regions each query region attends to, highest affinity first.
        """
        q_mean = q_regions.mean(dim=2).detach()  # (B, R, c)
        k_mean = k_regions.mean(dim=2).detach()
        affinity = q_mean @ k_mean.transpose(-2, -1)  # (B, R, R), Eq. (region-level adjacency)
        return affinity.topk(self.topk, dim=-1).indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.topk == GLOBAL_ATTENTION:
            return self._global_attention(x)
        batch, height, width, _ = x.shape
        pad_h, pad_w = (-height) % self.n_win, (-width) % self.n_win
        if pad_h or pad_w:
            if not self.auto_pad:
                raise ValueError(
                    f"input {height}x{width} is not divisible by n_win={self.n_win}; set auto_pad=True"
                )
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # zeros at the bottom/right, as the reference
        p = self.n_win
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        lepe = self._lepe(x, v)

        # (B, R = p*p regions, T = tokens per region, c)
        to_regions = "b (p1 h) (p2 w) c -> b (p1 p2) (h w) c"
        q_reg, k_reg, v_reg = (rearrange(t, to_regions, p1=p, p2=p) for t in (q, k, v))
        region_h, region_w = x.shape[1] // p, x.shape[2] // p
        index = self.route(q_reg, k_reg)  # (B, R, topk)

        kv_reg = torch.cat([k_reg, v_reg], dim=-1)
        if self.kv_per_win is not None:
            kv_map = rearrange(kv_reg, "b r (h w) c -> (b r) c h w", h=region_h, w=region_w)
            kv_map = _region_pool(kv_map, self.kv_per_win)
            kv_reg = rearrange(kv_map, "(b r) c h w -> b r (h w) c", b=batch)
        # gather the routed regions' keys/values: (B, R, topk, T_kv, c)
        batch_index = torch.arange(batch, device=x.device)[:, None, None]
        kv_sel = kv_reg[batch_index, index]
        k_sel, v_sel = kv_sel.split([self.qk_dim, self.dim], dim=-1)

        m = self.num_heads
        q_heads = rearrange(q_reg, "b r t (m d) -> b r m t d", m=m)
        k_heads = rearrange(k_sel, "b r k t (m d) -> b r m (k t) d", m=m)
        v_heads = rearrange(v_sel, "b r k t (m d) -> b r m (k t) d", m=m)
        out = self._attend(q_heads, k_heads, v_heads)  # (B, R, m, T, d)
        out = rearrange(
            out, "b (p1 p2) m (h w) d -> b (p1 h) (p2 w) (m d)", p1=p, p2=p, h=region_h, w=region_w
        )
        if lepe is not None:
            out = out + lepe
        out = self.proj(out)
        return out[:, :height, :width].contiguous()
