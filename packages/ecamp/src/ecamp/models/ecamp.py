"""The ECAMP pre-training network: MAE ViT + pixel decoder, super-resolution head and the fused report MLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ecamp.models.super_resolution import SuperResolutionHead
from ecamp.models.text import ReportMLM
from ecamp.models.vit import MAEDecoder, MaskedViTEncoder, unpatchify

__all__ = ["ECAMP", "ECAMPOutput", "attention_to_patch_grid", "window_from_attention"]


@dataclass
class ECAMPOutput:
    """What one ECAMP forward pass returns.

    image: (B, C, S, S) the encoder input (the high-resolution crop resized to S = img_size).
    reconstruction: (B, C, S, S) the decoder's prediction for every patch.
    patch_mask: (B, L) 1 = removed patch.
    ids_keep: (B, L_keep) the visible patches.
    super_resolved: (B, C, 2S, 2S) the SR head applied to the reconstruction (None when not computed).
    logits: (B, T, vocab) MLM logits.
    cross_attention: (B, heads, T, L_keep) fusion-layer attention of each token over the visible patches.
    """

    image: torch.Tensor
    reconstruction: torch.Tensor
    patch_mask: torch.Tensor
    ids_keep: torch.Tensor
    super_resolved: torch.Tensor | None
    logits: torch.Tensor
    cross_attention: torch.Tensor


class ECAMP(nn.Module):
    """ECAMP (Wang et al., arXiv 2312.13316): masked image modelling, context-guided super-resolution and
    entity-aware masked language modelling with a multi-scale context fusion layer.

    Input: a high-resolution crop (B, C, sr_scale * img_size, same) normalised; it is resized (bicubic) to
    ``img_size`` for the encoder and kept as the SR target. Report tokens (B, T) with [MASK] tokens and
    their attention mask.

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads: the MAE ViT (paper: 224, 16, 3, 768,
            12, 12).
        decoder_embed_dim, decoder_depth, decoder_num_heads: the MAE decoder (paper: 512, 4, 16).
        mlp_ratio: ViT MLP ratio.
        mask_ratio: fraction of patches removed (.75).
        sr_scale: super-resolution factor (2).
        vocab_size, text_hidden, text_layers, text_heads, text_ffn_dim, max_length: the BERT trained from
            scratch (30000, 768, 6, 6, 1536, 256).
        text_dropout: BERT dropout.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 4,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        sr_scale: int = 2,
        vocab_size: int = 30000,
        text_hidden: int = 768,
        text_layers: int = 6,
        text_heads: int = 6,
        text_ffn_dim: int = 1536,
        max_length: int = 256,
        text_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.mask_ratio, self.sr_scale = mask_ratio, sr_scale
        self.encoder = MaskedViTEncoder(
            img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio
        )
        self.decoder = MAEDecoder(
            self.encoder.num_patches,
            patch_size,
            in_chans,
            embed_dim,
            decoder_embed_dim,
            decoder_depth,
            decoder_num_heads,
            mlp_ratio,
        )
        self.super_resolution = SuperResolutionHead(in_chans, sr_scale)
        self.text = ReportMLM(
            vocab_size,
            text_hidden,
            text_layers,
            text_heads,
            text_ffn_dim,
            max_length,
            embed_dim,
            text_dropout,
        )
        self._init_weights()

    @property
    def grid(self) -> int:
        """Patches per side of the encoder input (= SR cells per side)."""
        return self.encoder.grid

    def _init_weights(self) -> None:
        # The reference initialises every Linear of the whole model (BERT included) with xavier-uniform.
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        w = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def downsample(self, image_hr: torch.Tensor) -> torch.Tensor:
        """(B, C, 2S, 2S) -> (B, C, S, S) bicubic (antialiased), the encoder input."""
        return F.interpolate(
            image_hr, size=(self.img_size, self.img_size), mode="bicubic", align_corners=False, antialias=True
        )

    def forward(
        self,
        image_hr: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        noise: torch.Tensor | None = None,
        super_resolve: bool = True,
    ) -> ECAMPOutput:
        """Args: ``noise`` (B, L) fixes the patch masking (lowest kept); ``super_resolve=False`` skips the SR
        head (its output is then None)."""
        expected = self.img_size * self.sr_scale
        if image_hr.shape[-2:] != (expected, expected):
            raise ValueError(f"expected a {expected}x{expected} input crop, got {tuple(image_hr.shape[-2:])}")
        image = self.downsample(image_hr)
        latent, patch_mask, ids_restore, ids_keep = self.encoder.forward_masked(image, self.mask_ratio, noise)
        reconstruction = unpatchify(self.decoder(latent, ids_restore), self.patch_size, self.in_chans)
        super_resolved = self.super_resolution(reconstruction) if super_resolve else None
        logits, cross_attention = self.text(input_ids, attention_mask, latent[:, 1:])
        return ECAMPOutput(
            image, reconstruction, patch_mask, ids_keep, super_resolved, logits, cross_attention
        )


def attention_to_patch_grid(
    cross_attention: torch.Tensor, token_weights: torch.Tensor, ids_keep: torch.Tensor, num_patches: int
) -> torch.Tensor:
    """Text-to-image attention of selected tokens, scattered back onto the full patch grid.

    Args:
        cross_attention: (B, heads, T, L_keep) attention over the visible patches.
        token_weights: (B, T) which tokens to use (e.g. 1 for entity tokens), averaged with these weights.
        ids_keep: (B, L_keep) patch index of each visible patch.
        num_patches: L.

    Returns:
        (B, L) attention per patch; removed patches get 0 (the model has not seen them).
    """
    per_token = cross_attention.mean(dim=1)  # (B, T, L_keep)
    w = token_weights.to(per_token.dtype)
    pooled = (per_token * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)  # (B, L_keep)
    grid = torch.zeros(per_token.shape[0], num_patches, dtype=pooled.dtype, device=pooled.device)
    return grid.scatter(1, ids_keep, pooled)


def window_from_attention(patch_attention: torch.Tensor, window_cells: int) -> torch.Tensor:
    """The ``window_cells`` x ``window_cells`` window holding the most attention.

    Args:
        patch_attention: (B, L) attention per patch of a square grid.
        window_cells: window side in patches.

    Returns:
        (B, 2) long, the window's top-left (row, col); ties go to the first in row-major order.
    """
    b, length = patch_attention.shape
    grid = round(length**0.5)
    if not 1 <= window_cells <= grid:
        raise ValueError(f"window_cells must be in [1, {grid}], got {window_cells}")
    sums = F.avg_pool2d(patch_attention.reshape(b, 1, grid, grid), window_cells, stride=1)  # (B, 1, n, n)
    n = grid - window_cells + 1
    best = sums.reshape(b, -1).argmax(dim=1)
    return torch.stack([best // n, best % n], dim=1)
