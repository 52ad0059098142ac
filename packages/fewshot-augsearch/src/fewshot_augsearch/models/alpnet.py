"""SSL-ALPNet (Ouyang et al., ECCV 2020): a dilated ResNet encoder at 1/8, adaptive local prototype pooling.

Shapes: images (B, C, H, W) with C = ``in_chans`` (grey slices are repeated to 3 channels by the model);
features (B, 256, H/8, W/8); masks (B, 1, H, W) in [0, 1]; logits (B, 2, H, W) = [background, foreground].
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ALPNet",
    "ALPNetOutput",
    "DilatedResNetEncoder",
    "local_prototype_scores",
    "masked_average_prototype",
]


class DilatedResNetEncoder(nn.Module):
    """A DeepLab-style encoder: a timm ResNet with output stride 8 (dilated last two stages) + 1x1 conv.

    As SSL-ALPNet's ``TVDeeplabRes101Encoder`` (ASPP off, the reference's default): the last stage's features
    are reduced to ``out_channels`` by a bias-free 1x1 convolution.

    Args:
        backbone: timm ResNet name (``resnet101`` in the paper).
        out_channels: feature channels after the 1x1 reduction (256).
        pretrained: load timm's ImageNet weights (needs a local timm/HF cache; the paper used MS-COCO
            DeepLabv3 weights, not available through timm).
        output_stride: 8 as in DeepLabv3.
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        out_channels: int = 256,
        pretrained: bool = False,
        output_stride: int = 8,
    ) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            backbone,
            pretrained=pretrained,
            features_only=True,
            output_stride=output_stride,
            out_indices=(-1,),
        )
        in_channels = self.backbone.feature_info.channels()[-1]
        self.reduce = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.out_channels = out_channels
        self.stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_channels, H/stride, W/stride)."""
        return self.reduce(self.backbone(x)[-1])


def _normalise(x: torch.Tensor, dim: int = 1, eps: float = 1e-4) -> torch.Tensor:
    # As the reference's safe_norm: the norm is floored at eps so that an all-zero vector stays finite.
    return x / x.norm(p=2, dim=dim, keepdim=True).clamp_min(eps)


def masked_average_prototype(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked average pooling: (S, C, h, w) features, (S, 1, h, w) soft mask -> (S, C) prototypes."""
    return (features * mask).sum(dim=(-1, -2)) / (mask.sum(dim=(-1, -2)) + 1e-5)


def local_prototype_scores(
    query: torch.Tensor,
    support: torch.Tensor,
    mask: torch.Tensor,
    window: int,
    threshold: float = 0.95,
    use_global: bool = True,
    temperature: float = 20.0,
) -> torch.Tensor:
    """Adaptive local prototype pooling and its similarity map (ALPNet, Eq. 1-3).

    Support features are average-pooled in ``window x window`` windows; a window becomes a local prototype
    where the pooled mask exceeds ``threshold``. ``use_global`` adds the masked-average (global) prototype.
    Scores: ``s = sum_k softmax_k(20 cos(q, p_k)) * 20 cos(q, p_k)`` per query location. Without any local
    prototype the global one alone is used (the reference's ``mask`` mode).

    Args:
        query: (Q, C, h, w) query features.
        support: (S, C, h, w) support features (the shots).
        mask: (S, 1, h, w) support mask resized to the feature size, values in [0, 1].
        window: pooling window (4 in training at 32x32 features, 2 in testing).

    Returns:
        (Q, 1, h, w) scores.
    """
    channels = support.shape[1]
    pooled = F.avg_pool2d(support, window).flatten(2).transpose(1, 2).reshape(-1, channels)  # (S*n, C)
    pooled_mask = F.avg_pool2d(mask, window).reshape(-1)  # (S*n,)
    prototypes = pooled[pooled_mask > threshold]
    if use_global or len(prototypes) == 0:
        prototypes = torch.cat([prototypes, masked_average_prototype(support, mask)], dim=0)
    sims = F.conv2d(_normalise(query), _normalise(prototypes)[..., None, None]) * temperature  # (Q, P, h, w)
    return (sims.softmax(dim=1) * sims).sum(dim=1, keepdim=True)


@dataclass
class ALPNetOutput:
    """``logits`` (Q, 2, H, W) [background, foreground]; ``align_loss`` scalar (0 when not computed)."""

    logits: torch.Tensor
    align_loss: torch.Tensor


class ALPNet(nn.Module):
    """SSL-ALPNet few-shot segmenter: 1-way, k-shot, binary (background vs the support's class).

    Args:
        backbone: timm ResNet name for :class:`DilatedResNetEncoder`.
        feature_channels: encoder output channels (256).
        pretrained: timm ImageNet weights for the backbone.
        train_window: local pooling window during training (feature 32 / proto grid 8 = 4).
        test_window: local pooling window at evaluation (2).
        threshold: a window is a prototype where its pooled mask > threshold (0.95; same for fg and bg).
        temperature: cosine-similarity scale (20).
        in_chans: input channels; grey (1-channel) inputs are tiled to this.
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        feature_channels: int = 256,
        pretrained: bool = False,
        train_window: int = 4,
        test_window: int = 2,
        threshold: float = 0.95,
        temperature: float = 20.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.encoder = DilatedResNetEncoder(backbone, feature_channels, pretrained)
        self.train_window, self.test_window = train_window, test_window
        self.threshold, self.temperature, self.in_chans = threshold, temperature, in_chans

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 or in_chans, H, W) -> (B, feature_channels, H/8, W/8)."""
        if images.shape[1] == 1 and self.in_chans != 1:
            images = images.expand(-1, self.in_chans, -1, -1)
        return self.encoder(images)

    def _scores(
        self, query: torch.Tensor, support: torch.Tensor, fg: torch.Tensor, window: int
    ) -> torch.Tensor:
        """(Q, 2, h, w) [bg, fg] scores from support features and a soft fg mask at feature size."""
        # Background: local prototypes only; foreground: local + global (reference: gridconv / gridconv+).
        bg = local_prototype_scores(query, support, 1 - fg, window, self.threshold, False, self.temperature)
        fg_scores = local_prototype_scores(query, support, fg, window, self.threshold, True, self.temperature)
        return torch.cat([bg, fg_scores], dim=1)

    def segment(
        self,
        query_features: torch.Tensor,
        support_features: torch.Tensor,
        support_mask: torch.Tensor,
        window: int,
    ) -> torch.Tensor:
        """Logits at feature size (Q, 2, h, w) from features and an image-size support mask (S, 1, H, W)."""
        fg = F.interpolate(support_mask.float(), size=support_features.shape[-2:], mode="bilinear")
        return self._scores(query_features, support_features, fg, window)

    def forward(
        self, support: torch.Tensor, support_mask: torch.Tensor, query: torch.Tensor, align: bool = False
    ) -> ALPNetOutput:
        """Segment ``query`` (Q, C, H, W) given ``support`` (S, C, H, W) and its mask (S, 1, H, W) in {0, 1}.

        ``align``: also compute PANet's prototype alignment loss (query prediction -> support segmentation).
        The training window is used in training mode, the test window in evaluation mode.
        """
        window = self.train_window if self.training else self.test_window
        features = self.forward_features(torch.cat([support, query], dim=0))
        support_features, query_features = features[: len(support)], features[len(support) :]
        logits = self.segment(query_features, support_features, support_mask, window)
        logits = F.interpolate(logits, size=query.shape[-2:], mode="bilinear")
        align_loss = logits.new_zeros(())
        if align:
            align_loss = self.alignment_loss(query_features, logits, support_features, support_mask, window)
        return ALPNetOutput(logits, align_loss)

    def alignment_loss(
        self,
        query_features: torch.Tensor,
        query_logits: torch.Tensor,
        support_features: torch.Tensor,
        support_mask: torch.Tensor,
        window: int,
    ) -> torch.Tensor:
        """Prototype alignment (PANet): the query's predicted fg mask segments each support shot; mean CE.

        query_features (Q, C, h, w), query_logits (Q, 2, H, W), support_features (S, C, h, w),
        support_mask (S, 1, H, W). As in the reference the predicted mask is a hard argmax (no gradient
        through it) and the loss is averaged over shots.
        """
        predicted = query_logits.argmax(dim=1, keepdim=True).float()
        fg = F.interpolate(predicted, size=query_features.shape[-2:], mode="bilinear")
        losses = []
        for shot in range(len(support_features)):
            scores = self._scores(support_features[shot : shot + 1], query_features, fg, window)
            scores = F.interpolate(scores, size=support_mask.shape[-2:], mode="bilinear")
            losses.append(F.cross_entropy(scores, support_mask[shot].long()))
        return torch.stack(losses).mean()
