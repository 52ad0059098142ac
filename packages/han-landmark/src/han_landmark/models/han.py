"""The Hybrid Attention Network (HAN / HYATT-Net, arXiv 2412.06499): backbone, FPN neck and three heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from han_landmark.models.blocks import BiFormerBlock, ConvAttentionBlock
from medzoo.models import build_model


class HybridStage(nn.Module):
    """One backbone stage: patch-embedding conv (k4, s2, p1) + BN, one BiFormer block, one CAB.

    Shapes: input ``(B, C_in, H, W)``, output ``(B, C_out, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, in_channels: int, out_channels: int, drop_path: float = 0.0, **bra_kwargs) -> None:
        super().__init__()
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.BatchNorm2d(out_channels)
        )
        self.transformer = BiFormerBlock(out_channels, drop_path=drop_path, **bra_kwargs)
        self.cab = ConvAttentionBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(self.transformer(self.patch_embed(x)))


class HybridBackbone(nn.Module):
    """HAN's five-stage hybrid CNN-transformer encoder; stage i works at 1/2**i of the input.

    Args:
        in_channels: image channels (3: grey X-rays are repeated to RGB, as in the paper).
        widths, num_heads, n_win, topk, mlp_ratios: one value per stage (see :class:`BiFormerBlock`).
        kv_per_win, qk_scale, side_dwconv, auto_pad: shared by every BRA.
        drop_path_rate: stochastic depth, rising linearly from 0 at stage 1 to this value at stage 5.

    Shapes:
        input ``(B, in_channels, H, W)``; output a list of 5 maps ``(B, widths[i], H_i, W_i)`` with
        ``H_i = H / 2**(i+1)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 320, 512, 1024),
        num_heads: Sequence[int] = (2, 4, 10, 16, 32),
        n_win: Sequence[int] = (16, 16, 16, 8, 8),
        topk: Sequence[int] = (1, 4, 8, 16, -2),
        mlp_ratios: Sequence[float] = (8, 8, 8, 4, 4),
        kv_per_win: int | None = 4,
        qk_scale: float | None = None,
        side_dwconv: int = 5,
        auto_pad: bool = True,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        depth = len(widths)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        channels = [in_channels, *widths]
        self.widths = tuple(widths)
        self.stages = nn.ModuleList(
            HybridStage(
                channels[i],
                channels[i + 1],
                drop_path=rates[i],
                num_heads=num_heads[i],
                n_win=n_win[i],
                topk=topk[i],
                mlp_ratio=mlp_ratios[i],
                kv_per_win=kv_per_win,
                qk_scale=qk_scale,
                side_dwconv=side_dwconv,
                auto_pad=auto_pad,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class FPNNeck(nn.Module):
    """Top-down feature pyramid fused into one map at the finest input level.

    3x3 lateral convs bring every level to ``out_channels``; coarser levels are nearest-upsampled and added;
    a final 3x3 conv smooths the finest sum.

    Shapes: input a list of maps, finest first, ``(B, in_channels[i], H_i, W_i)``; output
    ``(B, out_channels, H_0, W_0)``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 3, padding=1) for c in in_channels)
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        fused = laterals[-1]
        for lateral in reversed(laterals[:-1]):
            fused = lateral + F.interpolate(fused, size=lateral.shape[-2:], mode="nearest")
        return self.smooth(fused)


def heatmap_head(in_channels: int, hidden_channels: int, num_landmarks: int) -> nn.Sequential:
    """conv3x3-ReLU-conv1x1: ``(B, in_channels, h, w)`` -> ``(B, num_landmarks, h, w)`` heatmap logits."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, num_landmarks, 1),
    )


class FeatureFusionCorrectionModule(nn.Module):
    """FFCM, the full-resolution head.

    Concatenates head B's deconvolved feature (``feature_channels``), a 1x1 conv+BN+ReLU embedding of the
    image resampled to that feature's size (``image_channels``), and head B's K heatmaps, so the first conv
    sees ``feature_channels + image_channels + K`` channels (288 + K in the paper), then conv3x3-ReLU-conv1x1
    to K maps and bilinear upsampling to the input size.

    Shapes: ``feature (B, Cf, H/2, W/2)``, ``heatmaps_half (B, K, H/2, W/2)``, ``image (B, C_img, H, W)``
    -> ``(B, K, H, W)``.
    """

    def __init__(
        self,
        num_landmarks: int,
        feature_channels: int = 256,
        image_channels: int = 32,
        hidden_channels: int = 256,
        in_image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.image_embed = nn.Sequential(
            nn.Conv2d(in_image_channels, image_channels, 1, bias=False),
            nn.BatchNorm2d(image_channels),
            nn.ReLU(inplace=True),
        )
        self.fuse = heatmap_head(
            feature_channels + image_channels + num_landmarks, hidden_channels, num_landmarks
        )

    @property
    def in_channels(self) -> int:
        return self.fuse[0].in_channels

    def forward(
        self, feature: torch.Tensor, heatmaps_half: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        half_image = F.interpolate(image, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        fused = torch.cat([feature, self.image_embed(half_image), heatmaps_half], dim=1)
        return F.interpolate(self.fuse(fused), size=image.shape[-2:], mode="bilinear", align_corners=False)


class HybridAttentionNetwork(nn.Module):
    """HAN: hybrid backbone -> FPN over stages 2-5 -> three deeply supervised heatmap heads.

    Args:
        num_landmarks: K.
        in_channels: image channels.
        neck_channels: FPN width (256).
        head_channels: hidden width of every head's 3x3 conv (256).
        image_channels: width of FFCM's image embedding (32).
        **backbone_kwargs: forwarded to :class:`HybridBackbone`.

    Shapes:
        input ``(B, in_channels, H, W)``, ImageNet-normalised, H and W divisible by 32 for exact strides
        (other sizes work: BRA auto-pads, the neck and heads resample to matching sizes).
        :meth:`forward` returns three heatmap logit maps ``(B, K, H/4, W/4)``, ``(B, K, H/2, W/2)`` and
        ``(B, K, H, W)`` (heads A, B and C = FFCM); the Gaussian targets peak at 1.
    """

    strides: tuple[int, int, int] = (4, 2, 1)

    def __init__(
        self,
        num_landmarks: int,
        in_channels: int = 3,
        neck_channels: int = 256,
        head_channels: int = 256,
        image_channels: int = 32,
        **backbone_kwargs,
    ) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.backbone = HybridBackbone(in_channels=in_channels, **backbone_kwargs)
        self.neck = FPNNeck(self.backbone.widths[1:], neck_channels)  # stages 2-5 -> 1/4 resolution
        self.head_quarter = heatmap_head(neck_channels, head_channels, num_landmarks)  # head A
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(neck_channels, neck_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(neck_channels),
            nn.ReLU(inplace=True),
        )
        self.head_half = heatmap_head(neck_channels, head_channels, num_landmarks)  # head B
        self.head_full = FeatureFusionCorrectionModule(  # head C
            num_landmarks, neck_channels, image_channels, head_channels, in_channels
        )
        self.apply(self._init_weights)
        # Heatmap outputs start near zero (as the reference's heads, normal std 0.001), so the initial
        # loss is the energy of the Gaussian targets instead of thousands of times more.
        for head in (self.head_quarter, self.head_half, self.head_full.fuse):
            nn.init.normal_(head[-1].weight, std=0.001)
            nn.init.zeros_(head[-1].bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.groups == 1:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``(B, C, H, W)`` -> fused 1/4-resolution feature ``(B, neck_channels, H/4, W/4)``."""
        return self.neck(self.backbone(x)[1:])

    def forward_head(
        self, features: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heatmaps_quarter = self.head_quarter(features)
        feature_half = self.deconv(features)
        heatmaps_half = self.head_half(feature_half)
        heatmaps_full = self.head_full(feature_half, heatmaps_half, image)
        return heatmaps_quarter, heatmaps_half, heatmaps_full

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x), x)


# Named configurations (timm-style): keyword arguments of HybridAttentionNetwork.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper: widths 64-1024, heads 2-32, n_win 16,16,16,8,8, topk 1,4,8,16,global.
    "paper": {
        "num_landmarks": 19,
        "widths": (64, 128, 320, 512, 1024),
        "num_heads": (2, 4, 10, 16, 32),
        "n_win": (16, 16, 16, 8, 8),
        "topk": (1, 4, 8, 16, -2),
        "mlp_ratios": (8, 8, 8, 4, 4),
        "kv_per_win": 4,
        "drop_path_rate": 0.1,
        "neck_channels": 256,
        "head_channels": 256,
        "image_channels": 32,
    },
    # ~0.9M parameters with the same structure, for CPU tests and demos.
    "tiny": {
        "num_landmarks": 6,
        "widths": (16, 32, 48, 64, 96),
        "num_heads": (1, 2, 3, 4, 6),
        "n_win": (4, 4, 4, 2, 2),
        "topk": (1, 2, 4, 4, -2),
        "mlp_ratios": (2, 2, 2, 2, 2),
        "kv_per_win": 2,
        "drop_path_rate": 0.0,
        "neck_channels": 32,
        "head_channels": 32,
        "image_channels": 8,
    },
}


def create_model(name: str = "paper", **overrides: Any) -> HybridAttentionNetwork:
    """Build a named configuration (``"paper"`` or ``"tiny"``); ``overrides`` replace its entries,
    e.g. ``create_model("tiny", num_landmarks=19)``."""
    return build_model(MODEL_CONFIGS, HybridAttentionNetwork, name, **overrides)


def han_paper(num_landmarks: int = 19, **overrides: Any) -> HybridAttentionNetwork:
    """The paper's configuration."""
    return create_model("paper", num_landmarks=num_landmarks, **overrides)


def han_tiny(num_landmarks: int = 6, **overrides: Any) -> HybridAttentionNetwork:
    """The ``tiny`` configuration."""
    return create_model("tiny", num_landmarks=num_landmarks, **overrides)
