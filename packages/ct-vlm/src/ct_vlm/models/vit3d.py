"""A plain 3D Vision Transformer with anisotropic patches (the visual foundation model of E3D-GPT)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import nn


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"{name} must be one positive int or three, got {value!r}")
    return values  # type: ignore[return-value]


def patchify(volume: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Cut a volume into flattened patches in the token order of :class:`ViT3D`.

    Args:
        volume: (B, C, X, Y, Z), each spatial size divisible by its patch size.
        patch_size: (px, py, pz).

    Returns:
        (B, N, px * py * pz * C) with N = (X/px)(Y/py)(Z/pz), grid cells in row-major (x, y, z) order.
    """
    b, c, x, y, z = volume.shape
    px, py, pz = patch_size
    gx, gy, gz = x // px, y // py, z // pz
    patches = volume.reshape(b, c, gx, px, gy, py, gz, pz)
    patches = patches.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, gx, gy, gz, px, py, pz, C
    return patches.reshape(b, gx * gy * gz, px * py * pz * c)


def unpatchify(patches: torch.Tensor, grid: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, px*py*pz*C) -> (B, C, X, Y, Z)."""
    b = patches.shape[0]
    gx, gy, gz = grid
    px, py, pz = patch_size
    c = patches.shape[-1] // (px * py * pz)
    volume = patches.reshape(b, gx, gy, gz, px, py, pz, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return volume.reshape(b, c, gx * px, gy * py, gz * pz)


class ViT3D(nn.Module):
    """3D ViT: a strided Conv3d patch embedding, learned position embeddings, pre-norm timm blocks.

    The patches are anisotropic by default (16, 16, 8): at the paper's in-plane : slice resolution ratio of
    1 : 1 : 2 a patch then covers about the same physical length along every axis.

    Args:
        img_size: (X, Y, Z) voxels of the input; each divisible by its patch size.
        patch_size: (px, py, pz) voxels per patch.
        in_chans: input channels (1 for CT).
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads and MLP ratio.
        drop_path_rate: stochastic depth at the last block (linear ramp).
        intensity_mean, intensity_std: the input is standardised as (x - mean) / std before the patch
            embedding (defaults for a CT window scaled to [0, 1]). Without it, a from-scratch patch embedding
            barely separates small, faint structures (a lesion) from the body around them.

    Input: (B, C, X, Y, Z) intensities (CT windowed to [0, 1]). ``forward`` returns the token grid
    (B, N, D) with N = prod(grid_size), no class token (the projector keeps the spatial layout).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = (256, 256, 128),
        patch_size: int | Sequence[int] = (16, 16, 8),
        in_chans: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        intensity_mean: float = 0.5,
        intensity_std: float = 0.25,
    ) -> None:
        super().__init__()
        self.img_size = _triple(img_size, "img_size")
        self.patch_size = _triple(patch_size, "patch_size")
        if any(s % p for s, p in zip(self.img_size, self.patch_size, strict=True)):
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size, strict=True))
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.intensity_mean, self.intensity_std = float(intensity_mean), float(intensity_std)
        self.patch_embed = nn.Conv3d(in_chans, embed_dim, self.patch_size, stride=self.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r) for r in rates]
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        weight = self.patch_embed.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))  # as a linear layer on a flat patch
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def check_input(self, volume: torch.Tensor) -> None:
        if volume.ndim != 5 or tuple(volume.shape[1:]) != (self.in_chans, *self.img_size):
            raise ValueError(
                f"volume of shape {tuple(volume.shape)}; expected (B, {self.in_chans}, "
                f"{', '.join(map(str, self.img_size))}) (rank 5: batch, channel, X, Y, Z)"
            )

    def embed(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, N, D) patch tokens plus position embeddings (before the blocks)."""
        self.check_input(volume)
        volume = (volume - self.intensity_mean) / self.intensity_std
        tokens = self.patch_embed(volume).flatten(2).transpose(1, 2)  # B, N (gx*gy*gz row-major), D
        return tokens + self.pos_embed

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the blocks and the final norm on any subset of embedded tokens (B, n, D)."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_features(self, volume: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(self.embed(volume))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, N, D) token grid in row-major (x, y, z) order."""
        return self.forward_features(volume)
