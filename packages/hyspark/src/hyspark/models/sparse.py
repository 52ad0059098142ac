"""Submanifold sparse compute on the active sites of a HySparK mask, backed by spconv.

spconv is imported lazily, so ``import hyspark`` works without it (``pip install hyspark``); it is only
needed when an encoder runs with ``backend="spconv"`` (``pip install hyspark[cuda]`` on GPUs).

The active sites of every CNN scale are whole cells of the deepest grid, so each 2x2x2 max-pool window is
either fully active or fully masked: sparse pooling on active sites and masked-dense pooling agree exactly.

The convolution algorithm is one switch, :func:`select_conv_algorithm`
(``HybridEncoder(spconv_algorithm=...)``): ``"auto"`` takes spconv's implicit GEMM
(``ConvAlgo.MaskImplicitGemm``) for CUDA features and ``Native`` (gather-GEMM-scatter) on CPU, where spconv
has no implicit-GEMM kernels. The depthwise convolution and the pooling index spconv's Native rulebook on
every device (they do their arithmetic in torch); each scale builds its rulebooks once and every layer of the
stage reuses them.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

_CENTER_OFFSET = 13  # index of the (0, 0, 0) offset among the 27 offsets of a 3x3x3 kernel

# spconv's convolution algorithms by our name: "native" = ConvAlgo.Native, "implicit_gemm" = MaskImplicitGemm.
CONV_ALGORITHMS = ("auto", "native", "implicit_gemm")


def select_conv_algorithm(device: torch.device | str, requested: str = "auto") -> str:
    """The spconv algorithm for full submanifold convolutions of features on ``device``.

    ``"auto"``: ``"implicit_gemm"`` on CUDA (spconv's fast GPU kernels), ``"native"`` elsewhere. An explicit
    ``"implicit_gemm"`` off CUDA is an error: spconv builds those kernels for CUDA only.
    """
    if requested not in CONV_ALGORITHMS:
        raise ValueError(f"spconv_algorithm must be one of {CONV_ALGORITHMS}, got {requested!r}")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "auto":
        return "implicit_gemm" if on_cuda else "native"
    if requested == "implicit_gemm" and not on_cuda:
        raise ValueError(
            f"spconv_algorithm='implicit_gemm' needs CUDA features, got device {torch.device(device)}; "
            "spconv runs only the 'native' algorithm on CPU (use 'auto' or 'native')"
        )
    return requested


@functools.cache
def spconv_available() -> bool:
    """True when ``spconv.pytorch`` imports (the ``hyspark[cuda]`` extra)."""
    try:
        _spconv()
    except Exception:  # ImportError, or a broken CUDA build raising at import
        return False
    return True


def _spconv():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import spconv.pytorch as spconv
            from spconv.pytorch import functional as spconv_functional
            from spconv.pytorch import ops as spconv_ops
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "backend='spconv' needs spconv: `pip install hyspark[cuda]` (spconv-cu120) or another spconv 2.x "
            "build; use backend='dense' otherwise"
        ) from error
    return spconv, spconv_functional, spconv_ops


@dataclass
class SparseScale:
    """Active sites of one scale: ``indices`` (N, 4) int32 rows (b, z, y, x) and their subm rulebooks.

    ``algorithm`` ("native" or "implicit_gemm", see :func:`select_conv_algorithm`) is the algorithm of the
    full convolutions at this scale. The rulebooks are built on first use and shared by every layer of the
    scale; :meth:`release` drops them (autograd keeps what backward still needs).
    """

    indices: Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int
    algorithm: str = "native"
    _subm_rulebook: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    _implicit_gemm_rulebook: tuple | None = field(default=None, repr=False)

    @property
    def num_sites(self) -> int:
        return int(self.indices.shape[0])

    def subm_rulebook(self) -> tuple[Tensor, Tensor]:
        """Pairs (2, 27, N) input/output rows per kernel offset and counts (27,) of a 3x3x3 subm conv."""
        if self._subm_rulebook is None:
            spconv, _, ops = _spconv()
            _, pairs, counts = ops.get_indice_pairs(
                self.indices, self.batch_size, list(self.spatial_shape), spconv.ConvAlgo.Native,
                [3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0], True, False,
            )  # fmt: skip
            self._subm_rulebook = (pairs, counts)
        return self._subm_rulebook

    def implicit_gemm_rulebook(self) -> tuple:
        """spconv's implicit-GEMM subm rulebook (CUDA only): pairs, mask splits, argsorts and masks."""
        if self._implicit_gemm_rulebook is None:
            spconv, _, ops = _spconv()
            result = ops.get_indice_pairs_implicit_gemm(
                self.indices, self.batch_size, list(self.spatial_shape), spconv.ConvAlgo.MaskImplicitGemm,
                [3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0], True, False, True,
            )  # fmt: skip
            self._implicit_gemm_rulebook = tuple(result[2:9])
        return self._implicit_gemm_rulebook

    def release(self) -> None:
        """Drop the cached rulebooks of this scale (after its last layer ran)."""
        self._subm_rulebook = None
        self._implicit_gemm_rulebook = None

    def gather(self, dense: Tensor) -> Tensor:
        """(B, C, D, H, W) -> (N, C) features at the active sites."""
        b, z, y, x = self.indices.long().unbind(1)
        return dense.permute(0, 2, 3, 4, 1)[b, z, y, x]

    def scatter(self, features: Tensor) -> Tensor:
        """(N, C) -> (B, C, D, H, W) with zeros at masked sites (differentiable)."""
        b, z, y, x = self.indices.long().unbind(1)
        dense = features.new_zeros((self.batch_size, *self.spatial_shape, features.shape[1]))
        dense = dense.index_put((b, z, y, x), features)
        return dense.permute(0, 4, 1, 2, 3)


def active_sites(mask: Tensor, algorithm: str = "native") -> SparseScale:
    """Sites of a (B, 1, D, H, W) bool mask, in row-major order; ``algorithm`` for its full convolutions."""
    indices = torch.nonzero(mask[:, 0]).to(torch.int32).contiguous()
    return SparseScale(indices, tuple(mask.shape[2:]), int(mask.shape[0]), algorithm)


def subm_conv3d(features: Tensor, weight: Tensor, bias: Tensor | None, scale: SparseScale) -> Tensor:
    """Submanifold 3x3x3 convolution of (N, C_in) features; dense-layout weight (C_out, C_in, 3, 3, 3).

    Runs spconv's ``scale.algorithm``: Native rulebooks, or implicit GEMM on CUDA.
    """
    spconv, functional, _ = _spconv()
    filters = weight.permute(0, 2, 3, 4, 1).contiguous()  # spconv's (C_out, kD, kH, kW, C_in) layout
    features = features.contiguous()
    if scale.algorithm == "implicit_gemm":
        pair_fwd, pair_bwd, fwd_splits, bwd_splits, fwd_argsorts, bwd_argsorts, masks = (
            scale.implicit_gemm_rulebook()
        )
        out = functional.implicit_gemm(
            features, filters, pair_fwd, pair_bwd, fwd_splits, bwd_splits, fwd_argsorts, bwd_argsorts,
            scale.num_sites, masks, torch.is_grad_enabled(), True,
        )  # fmt: skip
    else:
        pairs, counts = scale.subm_rulebook()
        out = functional.indice_subm_conv(
            features, filters, pairs, counts, scale.num_sites, spconv.ConvAlgo.Native
        )
    return out if bias is None else out + bias


def _offset_pairs(scale: SparseScale) -> list[tuple[int, Tensor, Tensor]]:
    """(offset k, input rows, output rows) of every non-centre offset of the scale's subm rulebook.

    spconv's Native subm rulebook may store only offsets k < 13: a pair (i -> o) at offset k implies
    (o -> i) at the mirrored offset 26 - k, which is added here.
    """
    pairs, counts = scale.subm_rulebook()
    pairs_long, counts_list = pairs.long(), counts.tolist()
    half_stored = sum(counts_list[_CENTER_OFFSET + 1 :]) == 0
    out = []
    for offset, count in enumerate(counts_list):
        if offset == _CENTER_OFFSET or count == 0:
            continue
        rows_in, rows_out = pairs_long[0, offset, :count], pairs_long[1, offset, :count]
        out.append((offset, rows_in, rows_out))
        if half_stored:
            out.append((26 - offset, rows_out, rows_in))
    return out


class _SubmDepthwise(torch.autograd.Function):
    """Depthwise subm convolution that saves only its input and the rulebook for backward.

    Autograd through per-offset ``index_add`` would keep one gathered (pairs, C) copy of the features per
    kernel offset, 26 in all; here backward gathers them again instead.
    """

    @staticmethod
    def forward(ctx, features: Tensor, taps: Tensor, offsets: list) -> Tensor:
        out = features * taps[:, _CENTER_OFFSET]  # subm rulebooks leave the identity offset implicit
        for offset, rows_in, rows_out in offsets:
            out.index_add_(0, rows_out, features[rows_in] * taps[:, offset])
        ctx.save_for_backward(features, taps)
        ctx.offsets = offsets
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        features, taps = ctx.saved_tensors
        grad_features = grad_out * taps[:, _CENTER_OFFSET]
        grad_taps = torch.zeros_like(taps)
        grad_taps[:, _CENTER_OFFSET] = (grad_out * features).sum(0)
        for offset, rows_in, rows_out in ctx.offsets:
            grad_rows = grad_out[rows_out]
            grad_features.index_add_(0, rows_in, grad_rows * taps[:, offset])
            grad_taps[:, offset] += (grad_rows * features[rows_in]).sum(0)
        return grad_features, grad_taps, None


def subm_depthwise_conv3d(
    features: Tensor, weight: Tensor, bias: Tensor | None, scale: SparseScale
) -> Tensor:
    """Submanifold depthwise 3x3x3 convolution; weight (C, 1, 3, 3, 3).

    spconv 2.3 has no grouped convolution, so this reuses spconv's rulebook with a per-offset gather and
    scatter-add: the same arithmetic as SubMConv3d restricted to the diagonal of the kernel. Backward keeps
    only the input features (see :class:`_SubmDepthwise`).
    """
    taps = weight.reshape(weight.shape[0], 27)  # (C, 27), offset k = kd * 9 + kh * 3 + kw
    if features.dtype != taps.dtype:  # autocast: compute in the wider of the two
        dtype = torch.promote_types(features.dtype, taps.dtype)
        features, taps = features.to(dtype), taps.to(dtype)
    out = _SubmDepthwise.apply(features.contiguous(), taps, _offset_pairs(scale))
    return out if bias is None else out + bias


def sparse_max_pool2(features: Tensor, scale: SparseScale) -> tuple[Tensor, SparseScale]:
    """2x2x2 / stride-2 max pooling over active sites; returns pooled features and the coarser scale.

    The rulebook (which active sites fall in which output window) comes from spconv; the max itself is
    taken here, because spconv's Native max-pool starts from 0 and so clips negative maxima to 0
    (harmless after a ReLU, wrong for HySparK's pre-activation skip features).
    """
    spconv, _, ops = _spconv()
    out_indices, pairs, counts = ops.get_indice_pairs(
        scale.indices, scale.batch_size, list(scale.spatial_shape), spconv.ConvAlgo.Native,
        [2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], [0, 0, 0], False, False,
    )  # fmt: skip
    coarse = SparseScale(
        out_indices, tuple(s // 2 for s in scale.spatial_shape), scale.batch_size, scale.algorithm
    )
    pairs_long = pairs.long()
    candidates = []
    for offset, count in enumerate(counts.tolist()):
        rows_in, rows_out = pairs_long[0, offset, :count], pairs_long[1, offset, :count]
        empty = features.new_full((coarse.num_sites, features.shape[1]), float("-inf"))
        candidates.append(empty.index_copy(0, rows_out, features[rows_in]))
    return torch.stack(candidates).amax(dim=0), coarse


def channel_layer_norm(features: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over channels of (N, C) site features (per-site statistics, so active sites only)."""
    return F.layer_norm(features, (features.shape[1],), weight, bias, eps)
