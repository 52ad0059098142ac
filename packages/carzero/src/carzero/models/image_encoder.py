"""ViT image encoder of CARZero: a timm VisionTransformer returning the CLS token and the patch tokens."""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def sincos_2d_position_embedding(grid_size: int, dim: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding as in MAE.

    Half of the channels encode the row, half the column; each half is [sin(p w_k), cos(p w_k)] with
    w_k = 1 / 10000^(k / (dim/4)). Prefix tokens (CLS) get zeros.

    Returns:
        (1, num_prefix_tokens + grid_size**2, dim) float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega.reshape(1, -1)  # (N, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, dim/2)

    # MAE's order: the first half encodes the column (w), the second the row (h).
    table = torch.cat([encode(cols), encode(rows)], dim=1)
    prefix = torch.zeros(num_prefix_tokens, dim, dtype=torch.float64)
    return torch.cat([prefix, table], dim=0).unsqueeze(0).float()


class ImageEncoder(nn.Module):
    """ViT image encoder (timm `VisionTransformer`, no classification head).

    Args:
        img_size: square input side in pixels (224 in the paper).
        patch_size: patch side in pixels (16).
        embed_dim, depth, num_heads, mlp_ratio: transformer size (ViT-B: 768, 12, 12, 4).
        sincos_pos_embed: use the fixed (not learned) MAE 2D sin-cos position embedding, as the paper's
            MAE-initialised encoder does. False keeps timm's learned embedding.
        drop_path_rate: stochastic depth inside the ViT (0 in the paper).

    Input: (B, 3, img_size, img_size) float, normalised (see `carzero.data.NORMALIZE_MEAN`).
    Output of `forward`: global (B, D) CLS token and local (B, N, D) patch tokens, N = (img_size/patch)^2,
    both after the final LayerNorm (eps 1e-6).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        sincos_pos_embed: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.vit = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_classes=0,
            global_pool="token",
            drop_path_rate=drop_path_rate,
        )
        self.embed_dim = embed_dim
        self.num_patches = self.vit.patch_embed.num_patches
        if sincos_pos_embed:
            grid = math.isqrt(self.num_patches)
            fixed = sincos_2d_position_embedding(grid, embed_dim, num_prefix_tokens=1)
            self.vit.pos_embed.data.copy_(fixed)
            self.vit.pos_embed.requires_grad_(False)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + N, D) tokens after the final norm."""
        return self.vit.forward_features(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.forward_features(images)
        return tokens[:, 0], tokens[:, 1:]
