"""The Hybrid Attention Network (HAN / HYATT-Net, arXiv 2412.06499): backbone, FPN neck and three heads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from han_landmark.models.attention import GLOBAL_ATTENTION
from han_landmark.models.blocks import BiFormerBlock, ConvAttentionBlock
from medzoo.models import build_model


class HybridStage(nn.Module):
    """One backbone stage: patch-embedding conv (k4, s2, p1) [+ BN], one BiFormer block, one CAB.

    Args:
        in_channels, out_channels: C_in and C_out.
        drop_path: stochastic depth of the BiFormer block.
        patch_norm: BatchNorm after the patch-embedding conv. The reference builds a norm layer there but
            never applies it, so the ``paper`` configuration has none.
        shortcut_bias: bias of the CAB shortcut conv (none in the reference).
        **bra_kwargs: forwarded to :class:`BiFormerBlock`.

    Shapes: input ``(B, C_in, H, W)``, output ``(B, C_out, ceil(H/2), ceil(W/2))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        drop_path: float = 0.0,
        patch_norm: bool = False,
        shortcut_bias: bool = False,
        **bra_kwargs,
    ) -> None:
        super().__init__()
        embed = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)
        self.patch_embed = nn.Sequential(embed, nn.BatchNorm2d(out_channels)) if patch_norm else embed
        self.transformer = BiFormerBlock(out_channels, drop_path=drop_path, **bra_kwargs)
        self.cab = ConvAttentionBlock(out_channels, shortcut_bias=shortcut_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(self.transformer(self.patch_embed(x)))


class HybridBackbone(nn.Module):
    """HAN's five-stage hybrid CNN-transformer encoder; stage i works at 1/2**i of the input.

    Args:
        in_channels: image channels (3: grey X-rays are repeated to RGB, as in the paper).
        widths, num_heads, n_win, topk, mlp_ratios: one value per stage (see :class:`BiFormerBlock`).
        kv_per_win, qk_scale, side_dwconv, auto_pad: shared by every BRA.
        drop_path_rate: stochastic depth, rising linearly from 0 at stage 1 to this value at stage 5.
        global_lepe_on, global_qkv_bias: LePE source and q/k/v bias of the global-attention stages
            (``topk=-2``); the reference's ``AttentionLePE`` uses ``"input"`` and no bias. Routed stages keep
            BiFormer's LePE on V and q/k/v bias.
        patch_norm, shortcut_bias: see :class:`HybridStage`.

    Shapes:
        input ``(B, in_channels, H, W)``; output a list of 5 maps ``(B, widths[i], H_i, W_i)`` with
        ``H_i = H / 2**(i+1)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 320, 512, 1024),
        num_heads: Sequence[int] = (2, 4, 10, 16, 8),
        n_win: Sequence[int] = (16, 16, 16, 8, 8),
        topk: Sequence[int] = (1, 4, 8, 16, -2),
        mlp_ratios: Sequence[float] = (8, 8, 8, 4, 4),
        kv_per_win: int | None = 4,
        qk_scale: float | None = None,
        side_dwconv: int = 5,
        auto_pad: bool = True,
        drop_path_rate: float = 0.1,
        global_lepe_on: str = "input",
        global_qkv_bias: bool = False,
        patch_norm: bool = False,
        shortcut_bias: bool = False,
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
                lepe_on=global_lepe_on if topk[i] == GLOBAL_ATTENTION else "value",
                qkv_bias=global_qkv_bias if topk[i] == GLOBAL_ATTENTION else True,
                patch_norm=patch_norm,
                shortcut_bias=shortcut_bias,
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

    Args:
        num_landmarks: K.
        feature_channels, image_channels, hidden_channels, in_image_channels: the widths above.
        image_downsample: ``"nearest"`` (the reference's ``F.interpolate(scale_factor=0.5)``) or
            ``"bilinear"`` resampling of the image to the feature's size.
        align_corners: ``align_corners`` of the final bilinear upsampling (True in the reference's
            ``nn.Upsample``).

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
        image_downsample: str = "nearest",
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        if image_downsample not in ("nearest", "bilinear"):
            raise ValueError(f"image_downsample={image_downsample!r}: expected 'nearest' or 'bilinear'")
        self.image_downsample, self.align_corners = image_downsample, align_corners
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
        if self.image_downsample == "nearest":
            half_image = F.interpolate(image, size=feature.shape[-2:], mode="nearest")
        else:
            half_image = F.interpolate(image, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        fused = torch.cat([feature, self.image_embed(half_image), heatmaps_half], dim=1)
        return F.interpolate(
            self.fuse(fused), size=image.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )


def _norm_init(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    else:
        return False
    return True


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming fan-out for dense convs (depthwise convs keep PyTorch's default), Linear trunc-normal 0.02."""
    if _norm_init(module):
        return
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.groups == 1:
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _reference_init(module: nn.Module) -> None:
    """The reference backbone's init: convs normal(0, sqrt(2 / (k*k*C_out/groups))), Linear trunc-normal."""
    if _norm_init(module):
        return
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class HybridAttentionNetwork(nn.Module):
    """HAN: hybrid backbone -> FPN over stages 2-5 -> three deeply supervised heatmap heads.

    Args:
        num_landmarks: K.
        in_channels: image channels.
        neck_channels: FPN width (256).
        head_channels: hidden width of every head's 3x3 conv (256).
        image_channels: width of FFCM's image embedding (32).
        ffcm_image_downsample, ffcm_align_corners: see :class:`FeatureFusionCorrectionModule`.
        init: ``"reference"`` (the released code: backbone convs normal(0, sqrt(2 / fan_out)) with
            ``fan_out = k*k*C_out/groups``, Linear trunc-normal 0.02, neck Xavier-uniform, every head conv
            and the deconv normal(0, 0.001)) or ``"kaiming"`` (Kaiming fan-out for dense convs everywhere,
            PyTorch's default for depthwise convs, only each head's last conv at normal(0, 0.001)).
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
        ffcm_image_downsample: str = "nearest",
        ffcm_align_corners: bool = True,
        init: str = "reference",
        **backbone_kwargs,
    ) -> None:
        super().__init__()
        if init not in ("reference", "kaiming"):
            raise ValueError(f"init={init!r}: expected 'reference' or 'kaiming'")
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
            num_landmarks,
            neck_channels,
            image_channels,
            head_channels,
            in_channels,
            image_downsample=ffcm_image_downsample,
            align_corners=ffcm_align_corners,
        )
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        if init == "kaiming":
            self.apply(_kaiming_init)
            heads = (self.head_quarter[-1], self.head_half[-1], self.head_full.fuse[-1])
        else:
            self.apply(_reference_init)
            for conv in self.neck.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.xavier_uniform_(conv.weight)
                    nn.init.zeros_(conv.bias)
            heads = [
                m
                for part in (self.head_quarter, self.deconv, self.head_half, self.head_full)
                for m in part.modules()
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
            ]
        # Heatmap outputs start near zero (normal std 0.001, as the reference's heads), so the initial loss is
        # the energy of the Gaussian targets instead of thousands of times more.
        for conv in heads:
            nn.init.normal_(conv.weight, std=0.001)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

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
_PAPER: dict[str, Any] = {
    "num_landmarks": 19,
    "widths": (64, 128, 320, 512, 1024),
    "num_heads": (2, 4, 10, 16, 8),
    "n_win": (16, 16, 16, 8, 8),
    "topk": (1, 4, 8, 16, -2),
    "mlp_ratios": (8, 8, 8, 4, 4),
    "kv_per_win": 4,
    "drop_path_rate": 0.1,
    "global_lepe_on": "input",
    "global_qkv_bias": False,
    "patch_norm": False,
    "shortcut_bias": False,
    "neck_channels": 256,
    "head_channels": 256,
    "image_channels": 32,
    "ffcm_image_downsample": "nearest",
    "ffcm_align_corners": True,
    "init": "reference",
}

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The authors' released code (ECNUACRush/HYATT-Net): widths 64-1024, heads 2-16 and 8 in the global
    # stage 5 (AttentionLePE is built without its head count), n_win 16,16,16,8,8, topk 1,4,8,16,global.
    "paper": _PAPER,
    # What han-landmark 0.1-0.2 built from the paper's text before the code was released: 32 heads at
    # stage 5 (head_dim 32 everywhere), q/k/v bias and LePE on V there, BatchNorm in the patch embedding,
    # bilinear image downsample and align_corners=False in FFCM, a CAB shortcut bias, Kaiming init.
    "paper_notes": {
        **_PAPER,
        "num_heads": (2, 4, 10, 16, 32),
        "global_lepe_on": "value",
        "global_qkv_bias": True,
        "patch_norm": True,
        "shortcut_bias": True,
        "ffcm_image_downsample": "bilinear",
        "ffcm_align_corners": False,
        "init": "kaiming",
    },
    # ~0.9M parameters with the structure of "paper", for CPU tests and demos.
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
    """Build a named configuration (``"paper"``, ``"paper_notes"`` or ``"tiny"``); ``overrides`` replace
    its entries, e.g. ``create_model("tiny", num_landmarks=19)``."""
    return build_model(MODEL_CONFIGS, HybridAttentionNetwork, name, **overrides)


def han_paper(num_landmarks: int = 19, **overrides: Any) -> HybridAttentionNetwork:
    """The paper's configuration."""
    return create_model("paper", num_landmarks=num_landmarks, **overrides)


def han_tiny(num_landmarks: int = 6, **overrides: Any) -> HybridAttentionNetwork:
    """The ``tiny`` configuration."""
    return create_model("tiny", num_landmarks=num_landmarks, **overrides)
