"""The MAE vision transformer of ECAMP: a ViT encoder with random patch masking and a light pixel decoder."""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

__all__ = [
    "MAEDecoder",
    "MaskedViTEncoder",
    "patchify",
    "random_masking",
    "sincos_2d_position_embedding",
    "unpatchify",
]


def sincos_2d_position_embedding(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding (MAE): half the channels encode the row, half the column.

    Returns:
        (1 + grid * grid, dim) with a zero row for the class token first when ``cls_token``, else
        (grid * grid, dim). Patches are in row-major order.
    """
    if dim % 4:
        raise ValueError(f"the embedding dim must be a multiple of 4 for a 2D sin-cos embedding, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega[None]  # (grid*grid, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE's convention: the first half encodes the column (w) coordinate, the second half the row (h).
    table = torch.cat([encode(cols), encode(rows)], dim=1).float()
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table], dim=0)
    return table


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p * p * C), patches in row-major order, pixels (row, col, channel) inside."""
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {(h, w)} is not a multiple of the patch size {patch_size}")
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """(B, L, p * p * C) -> (B, C, H, W) for a square grid; the inverse of :func:`patchify`."""
    b, length, _ = patches.shape
    grid = math.isqrt(length)
    if grid * grid != length:
        raise ValueError(f"{length} patches do not form a square grid")
    x = patches.reshape(b, grid, grid, patch_size, patch_size, channels)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, channels, grid * patch_size, grid * patch_size)


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``1 - mask_ratio`` of the tokens of each sample (MAE's per-sample shuffle).

    Args:
        tokens: (B, L, D).
        mask_ratio: fraction of tokens removed; ``int(L * (1 - mask_ratio))`` are kept.
        noise: (B, L) optional ranking noise (lowest values are kept); default uniform random.

    Returns:
        kept (B, L_keep, D), mask (B, L) with 1 = removed, ids_restore (B, L), ids_keep (B, L_keep).
    """
    b, length, dim = tokens.shape
    keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(b, length, device=tokens.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(b, length, device=tokens.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore, ids_keep


class MaskedViTEncoder(nn.Module):
    """ViT encoder with a class token and fixed sin-cos positions; optionally masks patches (MAE).

    Input: (B, C, img_size, img_size) normalised images. ``forward_features`` returns every token
    (B, 1 + L, D); ``forward_masked`` the class token plus the visible patches only.

    Args:
        img_size: input side in pixels.
        patch_size: patch side in pixels.
        in_chans: input channels.
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        norm_eps: LayerNorm epsilon (MAE: 1e-6).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.img_size, self.patch_size, self.in_chans, self.embed_dim = (
            img_size,
            patch_size,
            in_chans,
            embed_dim,
        )
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid = img_size // patch_size
        self.num_patches = self.grid * self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer(
            "pos_embed", sincos_2d_position_embedding(embed_dim, self.grid)[None], persistent=False
        )
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)
        )
        self.norm = norm(embed_dim)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images) + self.pos_embed[:, 1:]

    def _encode(self, patches: torch.Tensor) -> torch.Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + L, D): class token then every patch, no masking."""
        return self._encode(self._tokens(images))

    def forward_masked(
        self, images: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches only.

        Returns:
            latent (B, 1 + L_keep, D), mask (B, L) 1 = removed, ids_restore (B, L), ids_keep (B, L_keep).
        """
        kept, mask, ids_restore, ids_keep = random_masking(self._tokens(images), mask_ratio, noise)
        return self._encode(kept), mask, ids_restore, ids_keep

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


class MAEDecoder(nn.Module):
    """MAE's pixel decoder: mask tokens fill the removed patches, a light ViT predicts p * p * C pixels each.

    Input: encoder latent (B, 1 + L_keep, D_enc) and ids_restore (B, L); output (B, L, p * p * C)
    predictions for every patch, in the (normalised) pixel space of the encoder input.
    """

    def __init__(
        self,
        num_patches: int,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 4,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        grid = math.isqrt(num_patches)
        self.embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer(
            "pos_embed", sincos_2d_position_embedding(decoder_embed_dim, grid)[None], persistent=False
        )
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(decoder_depth)
        )
        self.norm = norm(decoder_embed_dim)
        self.pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(latent)
        b, length = ids_restore.shape
        fill = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], fill], dim=1)  # visible first, then mask tokens
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # drop the class token
