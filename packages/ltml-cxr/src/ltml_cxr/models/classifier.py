"""The LTML-MIMIC-CXR classifier: a timm ResNet backbone, the PFC neck and a linear head."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

__all__ = ["LTMLClassifier", "PFCNeck"]


class PFCNeck(nn.Module):
    """Global average pooling, then FC -> BatchNorm1d -> Dropout (the reference's ``PFC`` neck, no ReLU).

    Input (B, C_in, h, w) feature maps; output (B, C_out) features.

    Args:
        in_channels: C_in (2048 for ResNet-50).
        out_channels: C_out (256 in the paper).
        dropout: dropout probability after the BatchNorm (0.5 in the paper; 0 disables it).
    """

    def __init__(self, in_channels: int = 2048, out_channels: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, out_channels)
        self.bn = nn.BatchNorm1d(out_channels)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))  # (B, C_in)
        return self.drop(self.bn(self.fc(pooled)))


class LTMLClassifier(nn.Module):
    """ResNet -> PFC neck (GAP, FC -> 256, BN, dropout .5) -> FC over the classes; multi-label logits.

    Input: (B, in_chans, H, W) normalised images (224 x 224 in the paper). Output: (B, num_classes) logits;
    ``sigmoid(logits)`` are the per-class probabilities.

    Args:
        num_classes: C (39 for LTML-MIMIC-CXR, 14 for ChestX-ray14).
        backbone: a timm model name (``resnet50`` in the paper).
        backbone_kwargs: extra keyword arguments of ``timm.create_model`` (the tiny variant shrinks the ResNet
            with ``layers``, ``channels`` and ``stem_width``).
        pretrained: ``None`` (random initialisation), a local weights file for the backbone (safetensors or a
            torch file, loaded with ``weights_only=True``; the classifier keys ``fc.*`` are ignored), or
            ``"timm:<tag>"`` to let timm load its pretrained weights (e.g. ``"timm:resnet50.tv_in1k"``, the
            torchvision ImageNet weights the reference starts from; timm downloads them once from the hub).
        neck_channels: width of the PFC neck (256).
        dropout: dropout of the neck (0.5).
        in_chans: input channels (3: the grey radiograph repeated).
    """

    def __init__(
        self,
        num_classes: int = 39,
        backbone: str = "resnet50",
        backbone_kwargs: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        neck_channels: int = 256,
        dropout: float = 0.5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        kwargs = dict(backbone_kwargs or {})
        from_timm = isinstance(pretrained, str) and pretrained.startswith("timm:")
        name = pretrained.split(":", 1)[1] if from_timm else backbone
        try:
            self.backbone = timm.create_model(
                name, pretrained=from_timm, num_classes=0, global_pool="", in_chans=in_chans, **kwargs
            )
        except (OSError, RuntimeError) as error:
            if not from_timm:
                raise
            from medzoo.errors import MedzooWeightsError

            raise MedzooWeightsError(
                f"could not load timm's pretrained {name!r} ({error}); offline, download it elsewhere and "
                "pass the weights file as pretrained=PATH"
            ) from error
        if pretrained is not None and not from_timm:
            self.load_backbone_weights(pretrained)
        self.num_features = int(self.backbone.num_features)
        self.neck = PFCNeck(self.num_features, neck_channels, dropout)
        self.head = nn.Linear(neck_channels, self.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference: neck FC Kaiming-normal (fan_out), BN (1, 0); classifier N(0, 0.01), bias 0.
        nn.init.kaiming_normal_(self.neck.fc.weight, mode="fan_out")
        nn.init.zeros_(self.neck.fc.bias)
        nn.init.ones_(self.neck.bn.weight)
        nn.init.zeros_(self.neck.bn.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Load backbone weights from a local file (timm/torchvision ResNet keys; ``fc.*`` dropped).

        Raises:
            MedzooWeightsError: unreadable file, or keys that do not match the backbone.
        """
        from medzoo.errors import MedzooWeightsError
        from medzoo.weights import load_weights

        state = load_weights(Path(path))
        state = {k.removeprefix("backbone."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "neck."))}
        try:
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise MedzooWeightsError(f"{path}: backbone weights do not match ({error})") from error
        if missing or unexpected:
            raise MedzooWeightsError(
                f"{path}: backbone keys do not match; missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, H/32, W/32) backbone feature maps."""
        return self.backbone.forward_features(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, num_features, h, w) -> (B, num_classes) logits."""
        return self.head(self.neck(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))
