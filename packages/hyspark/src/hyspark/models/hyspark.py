"""HySparK pre-training: hybrid sparse masking, densify, light decoder, masked-patch reconstruction loss."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyspark.models.encoder import HybridEncoder, upsample_cells


def patchify(volume: Tensor, patch: int) -> Tensor:
    """(B, C, D, H, W) -> (B, L, patch^3 * C) with L = (D/patch)(H/patch)(W/patch), row-major patch order."""
    b, c, d, h, w = volume.shape
    x = volume.reshape(b, c, d // patch, patch, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, d, h, w, p, p, p, C)
    return x.reshape(b, (d // patch) * (h // patch) * (w // patch), patch**3 * c)


def unpatchify(patches: Tensor, patch: int, grid: Sequence[int], channels: int = 1) -> Tensor:
    """Inverse of :func:`patchify`: (B, L, patch^3 * C) -> (B, C, D, H, W)."""
    b = patches.shape[0]
    gd, gh, gw = grid
    x = patches.reshape(b, gd, gh, gw, patch, patch, patch, channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, channels, gd * patch, gh * patch, gw * patch)


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Per-patch target normalisation: (p - mean) / sqrt(var + eps), var unbiased (as the reference).

    Returns (normalised, mean, std), mean and std shaped (B, L, 1).
    """
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps).sqrt()
    return (patches - mean) / std, mean, std


def masked_patch_mse(prediction: Tensor, target: Tensor, active_cells: Tensor, patch: int) -> Tensor:
    """MSE between a reconstruction and per-patch-normalised targets, on MASKED patches only.

    Args:
        prediction: (B, 1, D, H, W) reconstruction in normalised-patch units.
        target: (B, 1, D, H, W) the unmasked input.
        active_cells: (B, 1, D/patch, H/patch, W/patch) bool, True = visible (kept) patch.
    Returns the mean over masked patches of the per-patch mean squared error (a scalar).
    """
    normalised, _, _ = normalize_patches(patchify(target, patch))
    per_patch = (patchify(prediction, patch) - normalised).pow(2).mean(dim=-1)  # (B, L)
    masked = (~active_cells).flatten(1).to(per_patch.dtype)
    # where() rather than a product, so a non-finite prediction at a visible patch cannot leak in (inf * 0).
    per_patch = torch.where(masked.bool(), per_patch, torch.zeros_like(per_patch))
    return per_patch.sum() / masked.sum().clamp_min(1.0)


class MatmulConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d(cin, cout, 2, stride=2)`` computed as one matrix product and a pixel shuffle.

    With kernel = stride = 2 the output blocks do not overlap: each input voxel writes its own 2x2x2 block,
    ``x (N, cin) @ W (cin, cout * 8)`` reshaped. The same function, parameters and state-dict keys; oneDNN
    runs the transposed convolution several times slower than this matrix product on CPU. The output is in
    ``channels_last_3d`` memory format. ``matmul=False`` runs :class:`torch.nn.ConvTranspose3d`.
    """

    def __init__(self, cin: int, cout: int, matmul: bool = True) -> None:
        super().__init__(cin, cout, 2, stride=2)
        self.matmul = matmul

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if not self.matmul or output_size is not None or x.dim() != 5:
            return super().forward(x, output_size)
        b, cin, d, h, w = x.shape
        cout = self.out_channels
        rows = x.permute(0, 2, 3, 4, 1).reshape(-1, cin)  # free for a channels_last_3d input
        # (cin, cout, 2, 2, 2) -> columns (a, b, c, cout): output channels innermost, so that the shuffle
        # below and its backward copy contiguous runs of cout values.
        weight = self.weight.permute(0, 2, 3, 4, 1).reshape(cin, 8 * cout)
        bias = self.bias
        out = torch.mm(rows, weight) if bias is None else torch.addmm(bias.repeat(8), rows, weight)
        out = out.view(b, d, h, w, 2, 2, 2, cout).permute(0, 1, 4, 2, 5, 3, 6, 7)
        return out.reshape(b, 2 * d, 2 * h, 2 * w, cout).permute(0, 4, 1, 2, 3)


class PointwiseConv3d(nn.Conv3d):
    """``nn.Conv3d(cin, cout, 1)`` computed as ``F.linear`` over the channels of a channels-last view.

    The same function and keys; it avoids the copy to the default memory format that a 1x1 convolution to
    one channel makes of a ``channels_last_3d`` input (and its backward). ``matmul=False`` runs
    :class:`torch.nn.Conv3d`.
    """

    def __init__(self, cin: int, cout: int, matmul: bool = True) -> None:
        super().__init__(cin, cout, 1)
        self.matmul = matmul

    def forward(self, x: Tensor) -> Tensor:
        if not self.matmul or x.dim() != 5:
            return super().forward(x)
        return F.linear(x.permute(0, 2, 3, 4, 1), self.weight.flatten(1), self.bias).permute(0, 4, 1, 2, 3)


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class UpsampleBlock(nn.Sequential):
    """ConvTranspose x2, then (conv3x3-BN-ReLU) x2 from ``cin`` to ``cout`` channels."""

    def __init__(self, cin: int, cout: int, matmul: bool = True) -> None:
        super().__init__(
            MatmulConvTranspose3d(cin, cin, matmul), ConvBNReLU(cin, cout), ConvBNReLU(cout, cout)
        )


class FusionBlock(nn.Sequential):
    """Merges a concatenated skip: (conv3x3-BN-ReLU) x2 from 2C to C channels."""

    def __init__(self, channels: int) -> None:
        super().__init__(ConvBNReLU(2 * channels, channels), ConvBNReLU(channels, channels))


class LightDecoder(nn.Module):
    """SparK-style light decoder with concatenation + fusion skips (HySparK; SparK adds skips instead).

    ``levels`` (coarse to fine) have widths width / 2^i; level 0 enters directly, each next level is
    concatenated to the upsampled features and fused. Output (B, 1, 16*f, ...) at full resolution.
    ``matmul``: the transposed convolutions and the 1x1 head run as matrix products
    (:class:`MatmulConvTranspose3d`, :class:`PointwiseConv3d`): the same function and keys.
    """

    def __init__(
        self, width: int = 768, num_upsamples: int = 4, use_finest_skip: bool = False, matmul: bool = True
    ) -> None:
        super().__init__()
        widths = [width // 2**i for i in range(num_upsamples + 1)]
        self.widths = widths
        self.up = nn.ModuleList([UpsampleBlock(a, b, matmul) for a, b in itertools.pairwise(widths)])
        num_fused = num_upsamples if use_finest_skip else num_upsamples - 1
        self.fuse = nn.ModuleList([FusionBlock(widths[i + 1]) for i in range(num_fused)])
        self.head = PointwiseConv3d(widths[-1], 1, matmul)

    def forward(self, levels: Sequence[Tensor]) -> Tensor:
        x = self.up[0](levels[0])
        for i, fuse in enumerate(self.fuse, start=1):
            x = fuse(torch.cat([x, levels[i]], dim=1))
            if i < len(self.up):
                x = self.up[i](x)
        return self.head(x)


class HySparKOutput(NamedTuple):
    loss: Tensor  # scalar: MSE on masked patches
    reconstruction: Tensor  # (B, 1, D, H, W) in per-patch-normalised units
    active_cells: Tensor  # (B, 1, D/16, H/16, W/16) bool, True = visible


class HySparK(nn.Module):
    """Hybrid sparse masked image modelling on 3D volumes (pre-training).

    Args:
        encoder: the hybrid encoder (its ``backend`` picks dense or spconv compute).
        mask_ratio: fraction of 16^3 cells masked; each sample keeps exactly round(N * (1 - mask_ratio)).
        decoder_width: width of the deepest densified level; level i has decoder_width / 2^i channels.
        use_finest_skip: also densify and fuse the stride-1 encoder map. The reference builds that
            projection but never feeds it to its decoder; False matches it and skips the cost.
        norm_eps: epsilon added to the per-patch variance of the target.
        channels_last_decoder: keep the densify projections and the decoder in ``channels_last_3d`` memory
            format (the same function; oneDNN's 3D convolutions run faster there: the decoder's finest
            convolution took 0.79x the time in fp32 and 0.41x with bf16 autocast at 96^3 on CPU,
            ``benchmarks/hyspark.py --conv-only``).
        matmul_decoder: run the decoder's transposed convolutions and its 1x1 head as matrix products
            (:class:`MatmulConvTranspose3d`, :class:`PointwiseConv3d`): the same function and state-dict
            keys, faster on CPU. False runs the plain ``nn`` modules (the 0.3.0 decoder).

    ``forward(x, active_cells=None)`` takes x (B, 1, S, S, S) (S = encoder.img_size, values [0, 1]) and
    returns :class:`HySparKOutput`; a random mask is drawn when ``active_cells`` is None.
    """

    def __init__(
        self,
        encoder: HybridEncoder,
        mask_ratio: float = 0.75,
        decoder_width: int = 768,
        use_finest_skip: bool = False,
        norm_eps: float = 1e-6,
        channels_last_decoder: bool = True,
        matmul_decoder: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.patch = encoder.downsample_ratio
        self.norm_eps = norm_eps
        self.grid = encoder.img_size // self.patch
        num_levels = 5 if use_finest_skip else 4
        channels = encoder.feature_channels[::-1][:num_levels]  # coarse to fine
        self.mask_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1, 1)) for c in channels])
        self.densify_projs = nn.ModuleList(
            [
                nn.Conv3d(c, decoder_width >> i, 1 if i == 0 else 3, padding=0 if i == 0 else 1)
                for i, c in enumerate(channels)
            ]
        )
        self.decoder = LightDecoder(decoder_width, 4, use_finest_skip, matmul_decoder)
        self._init_weights()
        if channels_last_decoder:
            self.densify_projs.to(memory_format=torch.channels_last_3d)
            self.decoder.to(memory_format=torch.channels_last_3d)

    def _init_weights(self) -> None:
        """As the reference: mask tokens truncated normal (std .02 within +-.02); decoder convolutions
        truncated normal (std .02), its transposed convolutions kaiming normal (fan_out, ReLU), biases 0;
        BatchNorm 1 / 0; the densify projections keep PyTorch's default."""
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02, a=-0.02, b=0.02)
        for module in self.decoder.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.ConvTranspose3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_keep(self) -> int:
        return round(self.grid**3 * (1 - self.mask_ratio))

    def generate_mask(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Random cell mask (B, 1, f, f, f) bool with exactly ``num_keep`` visible cells per sample."""
        n = self.grid**3
        order = torch.rand(batch_size, n, generator=generator).argsort(dim=1)
        keep = torch.zeros(batch_size, n, dtype=torch.bool).scatter_(1, order[:, : self.num_keep], True)
        return keep.view(batch_size, 1, self.grid, self.grid, self.grid).to(device)

    def densify(self, maps: Sequence[Tensor], active_cells: Tensor) -> list[Tensor]:
        """Fill masked positions with per-scale mask tokens and project to decoder widths (coarse to fine)."""
        levels = []
        for i, (feature, token, proj) in enumerate(
            zip(maps[::-1], self.mask_tokens, self.densify_projs, strict=False)
        ):
            active = upsample_cells(active_cells, 2**i)
            levels.append(proj(torch.where(active, feature, token.to(feature.dtype))))
        return levels

    def forward(self, x: Tensor, active_cells: Tensor | None = None) -> HySparKOutput:
        if active_cells is None:
            active_cells = self.generate_mask(x.shape[0], x.device)
        visible = upsample_cells(active_cells, self.patch).to(x.dtype)
        # One expression, so the encoder's maps are freed once densified: the decoder does not hold them.
        levels = self.densify(self.encoder.forward_features(x * visible, active_cells), active_cells)
        reconstruction = self.decoder(levels)
        loss = masked_patch_mse(reconstruction, x, active_cells, self.patch)
        return HySparKOutput(loss, reconstruction, active_cells)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, active_cells: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """For visualisation: (masked input, reconstruction in input units, visible input + reconstruction).

        The reconstruction is de-normalised with each patch's own mean and std (as in MAE/SparK figures).
        """
        out = self.forward(x, active_cells)
        visible = upsample_cells(out.active_cells, self.patch)
        _, mean, std = normalize_patches(patchify(x, self.patch), self.norm_eps)
        grid = [s // self.patch for s in x.shape[2:]]
        rec = unpatchify(patchify(out.reconstruction, self.patch) * std + mean, self.patch, grid)
        return x * visible, rec, torch.where(visible, x, rec)
