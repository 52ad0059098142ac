"""Downstream networks on the pre-trained ECAMP image encoder: classification and segmentation."""

from __future__ import annotations

import torch
from torch import nn

from ecamp.models.vit import MaskedViTEncoder

__all__ = ["ViTClassifier", "ViTSegmenter"]


class ViTClassifier(nn.Module):
    """Multi-label classifier: ViT features, average-pooled patch tokens (or the class token), a linear head.

    Input (B, C, S, S); output (B, num_classes) logits.

    Args:
        encoder: the ECAMP image encoder (its weights come from pre-training).
        num_classes: output classes.
        pool: "avg" (mean of patch tokens, then LayerNorm; MAE fine-tuning) or "cls" (class token).
        linear_probe: freeze the encoder and put a BatchNorm without affine before the head (MAE's probe).
    """

    def __init__(
        self, encoder: MaskedViTEncoder, num_classes: int, pool: str = "avg", linear_probe: bool = False
    ):
        super().__init__()
        if pool not in ("avg", "cls"):
            raise ValueError(f"pool must be 'avg' or 'cls', got {pool!r}")
        self.encoder, self.pool, self.linear_probe = encoder, pool, linear_probe
        dim = encoder.embed_dim
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6) if pool == "avg" and not linear_probe else nn.Identity()
        self.head = nn.Sequential(
            nn.BatchNorm1d(dim, affine=False, eps=1e-6) if linear_probe else nn.Identity(),
            nn.Linear(dim, num_classes),
        )
        nn.init.trunc_normal_(self.head[1].weight, std=0.01 if linear_probe else 2e-5)
        nn.init.zeros_(self.head[1].bias)
        if linear_probe:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> ViTClassifier:
        super().train(mode)
        if self.linear_probe:
            self.encoder.eval()  # a probe reads fixed features
        return self

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D) pooled features."""
        tokens = self.encoder.forward_features(images)
        return self.fc_norm(tokens[:, 1:].mean(1) if self.pool == "avg" else tokens[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))


class ViTSegmenter(nn.Module):
    """Binary segmentation: ViT patch tokens as a (D, S/p, S/p) map and a 4-stage conv decoder (each stage
    x2 bilinear upsampling and two conv3-BN-ReLU), then a 1x1 conv to one logit per pixel.

    Input (B, C, S, S); output (B, 1, S, S) logits (the 4 stages restore a patch size of 16 exactly; other
    patch sizes are resized at the end).
    """

    def __init__(self, encoder: MaskedViTEncoder, channels: tuple[int, ...] = (256, 128, 64, 32)) -> None:
        super().__init__()
        self.encoder = encoder
        stages, width = [], encoder.embed_dim
        for out in channels:
            stages.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(width, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(out, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                )
            )
            width = out
        self.decoder = nn.Sequential(*stages)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.forward_features(images)[:, 1:]  # (B, L, D)
        b, _length, dim = tokens.shape
        grid = self.encoder.grid
        x = self.head(self.decoder(tokens.transpose(1, 2).reshape(b, dim, grid, grid)))
        if x.shape[-1] != images.shape[-1]:
            x = nn.functional.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return x
