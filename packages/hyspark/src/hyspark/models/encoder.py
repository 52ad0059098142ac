"""The HySparK hybrid encoder: five MedNeXt stages (sparse CNN) and a 3D ViT on the deepest grid.

Tang et al., "HySparK: Hybrid Sparse Masking for Large Scale Medical Image Pre-Training", MICCAI 2024.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from hyspark.models import sparse

BACKENDS = ("auto", "dense", "spconv")


def sincos_position_embedding_3d(grid: Sequence[int], dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 3D sin-cos position embedding, (prod(grid), dim); one third of the channels per axis."""
    if dim % 6 != 0:
        raise ValueError(f"embed dim must be divisible by 6 for a 3D sin-cos embedding, got {dim}")
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 6, dtype=torch.float32) / (dim // 6))
    parts = []
    for axis in axes:
        angles = axis.flatten()[:, None] * omega[None]  # (N, dim/6)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


def upsample_cells(active_cells: Tensor, factor: int) -> Tensor:
    """(B, 1, f, f, f) bool -> (B, 1, f*factor, ...) by repeating each cell (the same mask at every scale)."""
    out = active_cells
    for dim in (2, 3, 4):
        out = out.repeat_interleave(factor, dim=dim)
    return out


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over C of a (B, C, D, H, W) tensor: per-voxel statistics, so masked voxels never enter."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(
            x.permute(0, 2, 3, 4, 1), self.normalized_shape, self.weight, self.bias, self.eps
        ).permute(0, 4, 1, 2, 3)


class MedNeXtBlock(nn.Module):
    """depthwise conv -> channels-first LayerNorm -> 1x1 expand -> GELU -> 1x1 compress, plus the residual.

    ``forward`` takes dense (B, C, D, H, W) with an optional float mask (B, 1, D, H, W) of active voxels;
    ``forward_sparse`` takes (N, C) active-site features. Both compute the same function on active sites.
    """

    def __init__(self, channels: int, expansion: int = 4, kernel_size: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = ChannelsFirstLayerNorm(channels, eps=eps)
        self.expand = nn.Conv3d(channels, expansion * channels, 1)
        self.act = nn.GELU()
        self.compress = nn.Conv3d(expansion * channels, channels, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # channels-last: CPU depthwise 3D convolution is ~5x faster there (oneDNN instead of slow_conv3d).
        y = self.depthwise(x.contiguous(memory_format=torch.channels_last_3d))
        # The norm and the 1x1 convolutions act per voxel: computed on the (B, D, H, W, C) view, which is
        # contiguous in channels_last_3d, as matrix products. (nn.Conv3d runs a 1x1 convolution through
        # slow_conv3d on CPU and hands back the default memory format, so each block copied its maps.)
        y = y.permute(0, 2, 3, 4, 1)
        y = F.layer_norm(y, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        y = F.linear(y, self.expand.weight.flatten(1), self.expand.bias)
        y = F.linear(self.act(y), self.compress.weight.flatten(1), self.compress.bias)
        y = x + y.permute(0, 4, 1, 2, 3)
        # Masked sites got values from active neighbours (depthwise conv) and from the norm's bias: re-mask.
        return y if mask is None else y * mask

    def forward_sparse(self, features: Tensor, scale: sparse.SparseScale) -> Tensor:
        y = sparse.subm_depthwise_conv3d(features, self.depthwise.weight, self.depthwise.bias, scale)
        y = sparse.channel_layer_norm(y, self.norm.weight, self.norm.bias, self.norm.eps)
        y = F.linear(y, self.expand.weight.flatten(1), self.expand.bias)
        y = F.linear(self.act(y), self.compress.weight.flatten(1), self.compress.bias)
        return features + y


class MaskedViT(nn.Module):
    """ViT on the deepest grid that encodes only the kept (active) tokens of each sample.

    Input (B, C, f, f, f) with C = ``dim`` and ``active_cells`` (B, 1, f, f, f) bool or None; every sample
    must keep the same number of cells (exactly round(f^3 * (1 - mask_ratio)) with HySparK's masks).
    Masked positions of the output hold the learned mask token.
    """

    def __init__(
        self, dim: int = 384, depth: int = 3, num_heads: int = 12, mlp_ratio: float = 4.0, grid: int = 6
    ) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer(
            "pos_embed", sincos_position_embedding_3d((grid,) * 3, dim)[None], persistent=False
        )  # fixed, so not part of the weights
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            [Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def _position_embedding(self, grid: Sequence[int], x: Tensor) -> Tensor:
        if self.pos_embed.shape[1] == math.prod(grid):
            return self.pos_embed.to(x.dtype)
        return sincos_position_embedding_3d(grid, self.dim).to(x)[None]

    def forward(self, x: Tensor, active_cells: Tensor | None = None) -> Tensor:
        batch, channels, *grid = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self._position_embedding(grid, x)  # (B, N, C)
        if active_cells is None:
            for block in self.blocks:
                tokens = block(tokens)
            return self.norm(tokens).transpose(1, 2).reshape(batch, channels, *grid)

        keep = active_cells.flatten(1)  # (B, N) bool
        kept_per_sample = keep.sum(1)
        num_keep = int(kept_per_sample[0])
        if not bool((kept_per_sample == num_keep).all()):
            raise ValueError(
                f"every sample must keep the same number of cells, found {kept_per_sample.tolist()}"
            )
        num_tokens = keep.shape[1]
        # Kept positions first, in their original order; computed PER SAMPLE (the reference summed the
        # kept count over the batch, so with B > 1 its ViT saw every token).
        order = torch.argsort((~keep).long() * num_tokens + torch.arange(num_tokens, device=x.device), dim=1)
        kept_ids = order[:, :num_keep, None].expand(-1, -1, channels)  # (B, K, C)
        kept = torch.gather(tokens, 1, kept_ids)
        for block in self.blocks:
            kept = block(kept)
        kept = self.norm(kept)
        out = self.mask_token.to(kept.dtype).expand(batch, num_tokens, channels).scatter(1, kept_ids, kept)
        return out.transpose(1, 2).reshape(batch, channels, *grid)


class HybridEncoder(nn.Module):
    """MedNeXt CNN stages + ViT, with sparse (masked) compute on the active sites of a cell mask.

    Args:
        in_chans: input channels (1 for CT).
        img_size: crop edge in voxels; must be a multiple of 16 (the total downsampling).
        widths, depths, expansions: per-stage MedNeXt widths, block counts and expansion ratios.
        kernel_size: depthwise kernel (3; the spconv backend supports 3 only).
        vit_depth, vit_heads, mlp_ratio: ViT on the (img_size/16)^3 grid; heads default to img_size // 8.
        backend: "dense" (masked dense compute, pure torch), "spconv" (submanifold sparse compute on
            active sites only; ``hyspark[cuda]``) or "auto" (spconv for CUDA inputs when spconv is
            installed, dense otherwise). Both compute the same function of the active voxels.
        spconv_algorithm: spconv's algorithm for the full convolutions of the spconv backend: "auto"
            (implicit GEMM on CUDA, Native on CPU), "native" or "implicit_gemm" (CUDA only); see
            :func:`hyspark.models.sparse.select_conv_algorithm`.

    Initialisation follows the reference: convolutions keep PyTorch's default, the ViT's linears are xavier
    uniform, its mask token normal (std .02).

    ``forward_features(x, active_cells)`` takes x (B, in_chans, D, H, W) (any intensity range; HySparK feeds
    [0, 1] CT) and ``active_cells`` (B, 1, D/16, H/16, W/16) bool or None (None: everything active, as in
    fine-tuning). It returns five maps, fine to coarse, of widths (w1, w2, w3, w4, w4) at strides
    1, 2, 4, 8, 16; masked voxels hold 0 (CNN maps) or the ViT mask token (last map).
    """

    downsample_ratio = 16

    def __init__(
        self,
        in_chans: int = 1,
        img_size: int = 96,
        widths: Sequence[int] = (32, 64, 128, 256, 384),
        depths: Sequence[int] = (1, 1, 3, 3, 1),
        expansions: Sequence[int] = (2, 4, 4, 4, 2),
        kernel_size: int = 3,
        vit_depth: int = 3,
        vit_heads: int | None = None,
        mlp_ratio: float = 4.0,
        backend: str = "auto",
        spconv_algorithm: str = "auto",
    ) -> None:
        super().__init__()
        if img_size % self.downsample_ratio:
            raise ValueError(f"img_size must be a multiple of {self.downsample_ratio}, got {img_size}")
        if not len(widths) == len(depths) == len(expansions) == 5:
            raise ValueError("widths, depths and expansions need 5 entries (one per stage)")
        self.img_size = img_size
        self.backend = self._check_backend(backend)
        if spconv_algorithm not in sparse.CONV_ALGORITHMS:
            raise ValueError(
                f"spconv_algorithm must be one of {sparse.CONV_ALGORITHMS}, got {spconv_algorithm!r}"
            )
        self.spconv_algorithm = spconv_algorithm
        self.kernel_size = kernel_size
        self.stem = nn.Conv3d(in_chans, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(
            [
                nn.ModuleList([MedNeXtBlock(w, e, kernel_size) for _ in range(d)])
                for w, d, e in zip(widths, depths, expansions, strict=True)
            ]
        )
        # Between stages: conv3x3 to the next width, then MaxPool (the pre-pool map is the skip feature).
        self.widen = nn.ModuleList([nn.Conv3d(widths[i], widths[i + 1], 3, padding=1) for i in range(4)])
        self.pool = nn.MaxPool3d(2)
        self.vit = MaskedViT(widths[4], vit_depth, vit_heads or img_size // 8, mlp_ratio, img_size // 16)
        self.feature_channels = [widths[1], widths[2], widths[3], widths[4], widths[4]]
        self.apply(self._init_weights)

    @staticmethod
    def _check_backend(backend: str) -> str:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        return backend

    def resolve_backend(self, x: Tensor, backend: str | None = None) -> str:
        """The backend used for input ``x``: ``backend`` or the encoder's own, with "auto" resolved."""
        backend = self._check_backend(backend or self.backend)
        if backend == "auto":
            return "spconv" if x.is_cuda and sparse.spconv_available() else "dense"
        return backend

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # As the reference: only the ViT is initialised; the CNN's convolutions keep PyTorch's default.
        if isinstance(module, nn.Linear):  # ViT linears: xavier, as JAX ViT / MAE
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MaskedViT):
            nn.init.normal_(module.mask_token, std=0.02)

    def forward_features(
        self, x: Tensor, active_cells: Tensor | None = None, backend: str | None = None
    ) -> list[Tensor]:
        backend = self.resolve_backend(x, backend)
        spatial = x.shape[2:]
        if any(s % self.downsample_ratio for s in spatial):
            raise ValueError(f"input spatial size must be a multiple of 16, got {tuple(spatial)}")
        if backend == "spconv":
            if active_cells is None:
                active_cells = x.new_ones((x.shape[0], 1, *(s // 16 for s in spatial)), dtype=torch.bool)
            cnn_maps = self._forward_cnn_spconv(x, active_cells)
        else:
            cnn_maps = self._forward_cnn_dense(x, active_cells)
        return [*cnn_maps[:4], self.vit(cnn_maps[4], active_cells)]

    def forward(self, x: Tensor, active_cells: Tensor | None = None) -> list[Tensor]:
        return self.forward_features(x, active_cells)

    def _forward_cnn_dense(self, x: Tensor, active_cells: Tensor | None) -> list[Tensor]:
        masks: list[Tensor | None] = [None] * 5
        if active_cells is not None:
            masks = [upsample_cells(active_cells, 16 >> i).to(x.dtype) for i in range(5)]
            x = x * masks[0]  # masked voxels never enter, whatever their values
        # channels_last_3d from the stem on: every later layer keeps it (oneDNN runs the depthwise and 3x3
        # convolutions faster there), so the blocks make no format copies, forward or backward.
        x = self.stem(x).contiguous(memory_format=torch.channels_last_3d)
        if masks[0] is not None:
            x = x * masks[0]
        maps = []
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x, masks[i])
            if i < 4:
                skip = self.widen[i](x)
                if masks[i] is not None:
                    skip = skip * masks[i]
                maps.append(skip)
                x = self.pool(skip)  # pool windows are whole cells: fully active or fully zero
        maps.append(x)
        return maps

    def _forward_cnn_spconv(self, x: Tensor, active_cells: Tensor) -> list[Tensor]:
        if self.kernel_size != 3:
            raise ValueError("the spconv backend supports kernel_size=3 only")
        algorithm = sparse.select_conv_algorithm(x.device, self.spconv_algorithm)
        scale = sparse.active_sites(upsample_cells(active_cells, 16), algorithm)
        features = sparse.subm_conv3d(scale.gather(x), self.stem.weight, self.stem.bias, scale)
        maps = []
        for i, blocks in enumerate(self.stages):
            for block in blocks:  # every layer of the stage reuses the scale's rulebooks
                features = block.forward_sparse(features, scale)
            if i < 4:
                skip = sparse.subm_conv3d(features, self.widen[i].weight, self.widen[i].bias, scale)
                maps.append(scale.scatter(skip))
                features, coarse = sparse.sparse_max_pool2(skip, scale)
                scale.release()  # backward keeps what it needs; our cache of the finer scale goes
                scale = coarse
        maps.append(scale.scatter(features))
        scale.release()
        return maps


_REFERENCE_BLOCK_KEYS = {"conv1": "depthwise", "norm": "norm", "conv2": "expand", "conv3": "compress"}


def convert_reference_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a reference HySparK checkpoint (keys ``embeddings.*`` / ``mae.*``) to ``HybridEncoder`` keys.

    Any prefix before ``embeddings.`` / ``mae.`` (``module.``, ``sparse_encoder.sp_cnn.``, ...) is dropped.
    Mapping: ``embeddings.stem`` -> ``stem``; ``embeddings.layer{k}.{j}.conv1|norm|conv2|conv3`` ->
    ``stages.{k-1}.{j}.depthwise|norm|expand|compress``; ``embeddings.expend{k}`` -> ``widen.{k-1}``;
    ``mae.blocks|norm|mask_token`` -> ``vit.blocks|norm|mask_token`` (timm Block keys unchanged);
    ``mae.pos_embed`` is dropped (a fixed sin-cos table, rebuilt here). Other keys (decoders) are dropped.
    Keys already in this package's layout pass through unchanged.
    """
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        match = re.search(r"(?:^|\.)((?:embeddings|mae)\..*)$", key)
        if match is None:
            if re.match(r"^(stem|stages|widen|vit)\.", key):
                converted[key] = value
            continue
        ref = match.group(1)
        if m := re.fullmatch(r"embeddings\.stem\.(weight|bias)", ref):
            converted[f"stem.{m.group(1)}"] = value
        elif m := re.fullmatch(r"embeddings\.layer(\d)\.(\d+)\.(conv1|norm|conv2|conv3)\.(weight|bias)", ref):
            stage, block, part, kind = int(m.group(1)) - 1, m.group(2), m.group(3), m.group(4)
            converted[f"stages.{stage}.{block}.{_REFERENCE_BLOCK_KEYS[part]}.{kind}"] = value
        elif m := re.fullmatch(r"embeddings\.expend(\d)\.(weight|bias)", ref):
            converted[f"widen.{int(m.group(1)) - 1}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"mae\.((?:blocks|norm)\..*|mask_token)", ref):
            converted[f"vit.{m.group(1)}"] = value
    return converted
