"""Masked-autoencoder (MAE) pre-training of CARZero's ViT image encoder (He et al., CVPR 2022).

The paper starts from an MAE-pretrained ViT-B/16 on a private drive; this module makes that stage
reproducible: mask 75 % of the patches, encode the visible ones with the ViT, reconstruct the pixels of every
patch with a small decoder, and score only the masked patches (per-patch normalised MSE).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from carzero.models.image_encoder import ImageEncoder, sincos_2d_position_embedding
from medzoo.masking import masked_patch_loss, random_masking


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C) patches in row-major order, pixels ordered (row, column, channel)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image side {height}x{width} is not a multiple of the patch size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, rows, cols, p, p, C)
    return x.reshape(batch, rows * cols, patch_size * patch_size * channels)


class MaskedAutoencoder(nn.Module):
    """MAE around an `ImageEncoder`: the encoder sees only the visible patches, a light decoder sees all.

    Args:
        encoder: the ViT to pre-train (its `vit` is a timm VisionTransformer; its state dict is what
            `carzero fit --model.vit_weights` loads).
        decoder_dim, decoder_depth, decoder_heads: the MAE decoder (MAE ViT-B: 512, 8, 16).
        mask_ratio: fraction of patches hidden from the encoder (0.75).
        normalize_target: per-patch normalised pixel targets (MAE's norm_pix_loss, True).

    Input: (B, 3, H, W) normalised images. `forward` returns (loss, prediction (B, N, p*p*3), mask (B, N)).
    """

    def __init__(
        self,
        encoder: ImageEncoder,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        normalize_target: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.normalize_target = normalize_target
        vit = encoder.vit
        self.patch_size = int(vit.patch_embed.patch_size[0])
        num_patches = vit.patch_embed.num_patches
        grid = round(num_patches**0.5)
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_2d_position_embedding(grid, decoder_dim, 1), persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * 3)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for module in [self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred]:
            module.apply(self._init_layer)

    @staticmethod
    def _init_layer(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):  # MAE: xavier-uniform linear layers, zero biases
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_encoder(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), keep (B, K) -> (B, 1 + K, D): CLS and the visible patches after the final norm."""
        vit = self.encoder.vit
        patches = vit.patch_embed(images) + vit.pos_embed[:, 1:]  # (B, N, D)
        dim = patches.shape[-1]
        visible = patches.gather(1, keep.unsqueeze(-1).expand(-1, -1, dim))  # (B, K, D)
        cls_token = (vit.cls_token + vit.pos_embed[:, :1]).expand(len(images), -1, -1)
        tokens = vit.norm_pre(torch.cat([cls_token, visible], dim=1))
        for block in vit.blocks:
            tokens = block(tokens)
        return vit.norm(tokens)

    def forward_decoder(self, tokens: torch.Tensor, keep: torch.Tensor, num_patches: int) -> torch.Tensor:
        """(B, 1 + K, D) encoded tokens -> (B, N, p*p*3) predicted pixels of every patch."""
        tokens = self.decoder_embed(tokens)
        batch, _, dim = tokens.shape
        full = self.mask_token.expand(batch, num_patches, dim).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, dim), tokens[:, 1:])  # back in place
        x = torch.cat([tokens[:, :1], full], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, prediction and mask; `noise` (B, N) fixes which patches are kept (see `random_masking`)."""
        num_patches = self.encoder.vit.patch_embed.num_patches
        keep, mask = random_masking(
            len(images), num_patches, self.mask_ratio, generator=generator, device=images.device, noise=noise
        )
        prediction = self.forward_decoder(self.forward_encoder(images, keep), keep, num_patches)
        target = patchify(images, self.patch_size)
        loss = masked_patch_loss(prediction, target, mask, self.normalize_target)
        return loss, prediction, mask

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The ViT weights in timm layout (`cls_token`, `pos_embed`, `patch_embed.*`, `blocks.*`, ...)."""
        return {k: v.detach().clone() for k, v in self.encoder.vit.state_dict().items()}
