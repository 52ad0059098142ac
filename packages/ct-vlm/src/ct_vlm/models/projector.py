"""Vision-to-language projectors: the 3D convolutional projector, and the flatten + linear baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_output_grid(
    grid: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0, 0)
) -> tuple[int, int, int]:
    """Grid after a Conv3d: floor((g + 2p - k) / s) + 1 per axis."""
    out = tuple(
        (g + 2 * p - k) // s + 1 for g, k, s, p in zip(grid, kernel_size, stride, padding, strict=True)
    )
    if min(out) < 1:
        raise ValueError(f"kernel {tuple(kernel_size)} does not fit the token grid {tuple(grid)}")
    return out  # type: ignore[return-value]


class ConvProjector3D(nn.Module):
    """The "convolutional perceiver": 3D convolutions aggregate and downsample the ViT token grid, then an
    MLP maps each remaining cell to the language model's width.

    Layers: Conv3d(D, hidden, kernel_size, stride) -> GELU -> Conv3d(hidden, hidden, 3, padding 1) -> GELU
    -> flatten cells (row-major x, y, z) -> Linear(hidden, out_dim) -> GELU -> Linear(out_dim, out_dim).

    Args:
        in_dim: ViT width D.
        out_dim: language-model hidden size H.
        grid_size: the ViT token grid (gx, gy, gz).
        kernel_size, stride: the downsampling convolution (paper: unspecified; default 2 and 2, i.e. 8x fewer
            tokens).
        hidden_dim: channels of the convolutions (default ``in_dim``).

    Input (B, N, D) tokens with N = gx*gy*gz; output (B, num_tokens, H).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid_size: Sequence[int],
        kernel_size: int | Sequence[int] = 2,
        stride: int | Sequence[int] = 2,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        kernel = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        strides = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        hidden = hidden_dim or in_dim
        self.grid_size = tuple(int(g) for g in grid_size)
        self.out_grid = conv_output_grid(self.grid_size, kernel, strides)
        self.num_tokens = self.out_grid[0] * self.out_grid[1] * self.out_grid[2]
        self.downsample = nn.Conv3d(in_dim, hidden, kernel, stride=strides)
        self.mix = nn.Conv3d(hidden, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.mlp = nn.Sequential(nn.Linear(hidden, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        gx, gy, gz = self.grid_size
        if n != gx * gy * gz:
            raise ValueError(f"{n} tokens do not form the grid {self.grid_size}")
        grid = tokens.transpose(1, 2).reshape(b, d, gx, gy, gz)  # B, D, gx, gy, gz
        grid = self.act(self.mix(self.act(self.downsample(grid))))  # B, hidden, ox, oy, oz
        return self.mlp(grid.flatten(2).transpose(1, 2))  # B, num_tokens, H


class LinearProjector(nn.Module):
    """Baseline: every ViT token becomes one visual token through a linear layer (N tokens to the LLM)."""

    def __init__(self, in_dim: int, out_dim: int, num_patches: int) -> None:
        super().__init__()
        self.num_tokens = num_patches
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)
