"""MAE pre-training of the 3D ViT: random 75% token masking, a light decoder, per-patch normalised MSE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ct_vlm.models.vit3d import ViT3D, patchify
from medzoo.masking import masked_patch_loss, random_masking

# The 0.1 name of the core's MAE loss, kept for callers of ct_vlm.models.
masked_patch_mse = masked_patch_loss


@dataclass
class MAEOutput:
    loss: torch.Tensor  # scalar
    prediction: torch.Tensor  # (B, N, P) predicted patches (normalised if norm_pix_loss)
    mask: torch.Tensor  # (B, N), 1 = masked


class MAE3D(nn.Module):
    """Masked autoencoder around a :class:`ViT3D`.

    The encoder sees only the visible tokens; a narrow decoder (its own position embeddings, mask tokens)
    predicts the voxels of every patch; the loss covers the masked patches.

    Args:
        encoder: the 3D ViT to pre-train.
        mask_ratio: fraction of tokens masked (paper 0.75).
        decoder_dim, decoder_depth, decoder_heads: the decoder transformer (MAE: 512, 8, 16).
        norm_pix_loss: per-patch normalised targets.
    """

    def __init__(
        self,
        encoder: ViT3D,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.encoder, self.mask_ratio, self.norm_pix_loss = encoder, mask_ratio, norm_pix_loss
        patch_voxels = (
            encoder.in_chans * encoder.patch_size[0] * encoder.patch_size[1] * encoder.patch_size[2]
        )
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, encoder.num_patches, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, 4.0, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_voxels)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        for module in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_encoder(self, volume: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode only the kept tokens: volume (B, C, X, Y, Z), keep (B, n) -> (B, n, D)."""
        tokens = self.encoder.embed(volume)
        visible = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.encoder.forward_tokens(visible)

    def forward_decoder(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, n, D) visible latents -> (B, N, P) patch predictions for every position."""
        visible = self.decoder_embed(latent)
        b = keep.shape[0]
        full = self.mask_token.expand(b, self.encoder.num_patches, -1).clone()
        full = full.scatter(1, keep[..., None].expand(-1, -1, visible.shape[-1]), visible)
        tokens = full + self.decoder_pos_embed
        for block in self.decoder_blocks:
            tokens = block(tokens)
        return self.decoder_pred(self.decoder_norm(tokens))

    def forward(self, volume: torch.Tensor, keep: torch.Tensor | None = None, generator=None) -> MAEOutput:
        """volume (B, C, X, Y, Z); ``keep`` (B, n) visible token indices (default: random, ``mask_ratio``)."""
        b = volume.shape[0]
        if keep is None:
            keep, mask = random_masking(
                b, self.encoder.num_patches, self.mask_ratio, generator=generator, device=volume.device
            )
        else:
            mask = torch.ones(b, self.encoder.num_patches, device=volume.device)
            mask.scatter_(1, keep, 0.0)
        prediction = self.forward_decoder(self.forward_encoder(volume, keep), keep)
        target = patchify(volume, self.encoder.patch_size)
        loss = masked_patch_loss(prediction, target, mask, self.norm_pix_loss)
        return MAEOutput(loss, prediction, mask)
