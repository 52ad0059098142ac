"""Fine-tuning network: the HySparK hybrid encoder (dense) with a UNet-style decoder."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks import UnetOutBlock, UnetrUpBlock
from torch import Tensor, nn

from hyspark.models.encoder import HybridEncoder


class HySparKSegmenter(nn.Module):
    """Hybrid encoder + UNet-style decoder (transposed-conv up, concatenated skip, residual block with
    InstanceNorm and LeakyReLU; MONAI's ``UnetrUpBlock``), as in the HySparK fine-tuning network.

    Args:
        num_classes: output channels including background (14 for BTCV).
        in_chans, img_size, widths, depths, expansions, vit_depth, vit_heads: as :class:`HybridEncoder`.
        norm_name: MONAI norm of the decoder blocks ("instance").

    ``forward(x)``: x (B, in_chans, D, H, W), D/H/W multiples of 16 ([0, 1] CT) -> logits
    (B, num_classes, D, H, W). Pre-trained encoder weights go to ``self.encoder``.
    """

    def __init__(
        self,
        num_classes: int = 14,
        in_chans: int = 1,
        img_size: int = 96,
        widths: Sequence[int] = (32, 64, 128, 256, 384),
        depths: Sequence[int] = (1, 1, 3, 3, 1),
        expansions: Sequence[int] = (2, 4, 4, 4, 2),
        vit_depth: int = 3,
        vit_heads: int | None = None,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        # Fine-tuning sees whole volumes, nothing masked: the dense backend is the right one.
        self.encoder = HybridEncoder(
            in_chans,
            img_size,
            widths,
            depths,
            expansions,
            vit_depth=vit_depth,
            vit_heads=vit_heads,
            backend="dense",
        )
        c = self.encoder.feature_channels  # (w1, w2, w3, w4, w4), fine to coarse
        self.up_blocks = nn.ModuleList(
            [UnetrUpBlock(3, c[i + 1], c[i], 3, 2, norm_name, res_block=True) for i in reversed(range(4))]
        )
        self.head = UnetOutBlock(3, c[0], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        maps = self.encoder.forward_features(x)
        y = maps[4]
        for block, skip in zip(self.up_blocks, maps[3::-1], strict=True):
            y = block(y, skip)
        return y

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
