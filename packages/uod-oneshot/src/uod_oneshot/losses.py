"""UOD's losses: the multi-scale cosine-similarity InfoNCE of stage 1 and the heatmap loss of stage 2.

Coordinates follow medzoo's convention: ``(x, y) = (column, row)`` float pixels, pixel centres at integers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "cosine_similarity_maps",
    "feature_cells",
    "gather_point_features",
    "heatmap_loss",
    "multiscale_infonce_loss",
    "window_infonce_loss",
]


def feature_cells(points: torch.Tensor, stride: int, size_hw: Sequence[int]) -> torch.Tensor:
    """The cell ``(col, row)`` of a stride-``stride`` map that holds each pixel position.

    Args:
        points: (..., 2) (x, y) pixels of the full-resolution input.
        stride: the map's stride.
        size_hw: (h, w) of the map; cells are clamped into it.

    Returns:
        (..., 2) int64 (col, row): ``floor(round(p) / stride)``.
    """
    cells = torch.div(torch.floor(points + 0.5), stride, rounding_mode="floor").long()
    cols = cells[..., 0].clamp(0, int(size_hw[1]) - 1)
    rows = cells[..., 1].clamp(0, int(size_hw[0]) - 1)
    return torch.stack([cols, rows], dim=-1)


def gather_point_features(features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Feature vectors at cells: features (B, C, h, w), cells (B, N, 2) (col, row) -> (B, N, C)."""
    batch, channels, _, width = features.shape
    flat = features.flatten(2)  # (B, C, h*w)
    index = (cells[..., 1] * width + cells[..., 0])[:, None, :].expand(batch, channels, -1)
    return torch.gather(flat, 2, index).transpose(1, 2)


def cosine_similarity_maps(features: torch.Tensor, queries: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """UOD's cosine similarity ``<f, q> / (|f| |q| + eps)`` of every map position with every query.

    Args:
        features: (B, C, h, w).
        queries: (B, N, C).
        eps: the reference's 1e-3 (added to the product of the norms, not to each norm).

    Returns:
        (B, N, h, w) similarities (not clamped).
    """
    dot = torch.einsum("bnc,bchw->bnhw", queries, features)
    norms = queries.norm(dim=-1)[..., None, None] * features.norm(dim=1)[:, None]
    return dot / (norms + eps)


def window_infonce_loss(
    similarity: torch.Tensor,
    target_cells: torch.Tensor,
    window: int | None = 6,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Softmax cross-entropy of clamped similarities at the true cell, over a window around it.

    ``loss = -log( exp(s_gt / T) / sum_{p in W} exp(s_p / T) )`` with ``s`` clamped to [0, 1] and ``W``
    the cells ``[gt - window, gt + window)`` per axis (12 x 12 for window 6, asymmetric as in the
    reference), cut at the map border; ``window=None`` uses the whole map.

    Args:
        similarity: (B, N, h, w) cosine similarities.
        target_cells: (B, N, 2) int (col, row) true cells.
        window: half-width in cells, or ``None``.
        temperature: T (the reference: 1).

    Returns:
        scalar: the mean over B and N.
    """
    batch, num, height, width = similarity.shape
    logits = similarity.clamp(0.0, 1.0) / temperature
    if window is not None:
        rows = torch.arange(height, device=logits.device)
        cols = torch.arange(width, device=logits.device)
        col0, row0 = target_cells[..., 0, None], target_cells[..., 1, None]  # (B, N, 1)
        in_rows = (rows >= row0 - window) & (rows < row0 + window)  # (B, N, h)
        in_cols = (cols >= col0 - window) & (cols < col0 + window)  # (B, N, w)
        inside = in_rows[..., :, None] & in_cols[..., None, :]
        logits = logits.masked_fill(~inside, float("-inf"))
    flat_target = target_cells[..., 1] * width + target_cells[..., 0]
    return F.cross_entropy(logits.reshape(batch * num, -1), flat_target.reshape(-1))


def multiscale_infonce_loss(
    full_features: Sequence[torch.Tensor],
    crop_features: Sequence[torch.Tensor],
    full_points: torch.Tensor,
    crop_points: torch.Tensor,
    strides: Sequence[int] = (32, 16, 8, 4, 2),
    window: int = 6,
    temperature: float = 1.0,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stage 1's loss: each crop point's feature must find its own position in the full image, per scale.

    For every stride ``s``: the crop's embedding at the point (cell of ``crop_points``) is the query; its
    cosine similarity with the full image's stride-``s`` map gives the logits of a softmax cross-entropy
    whose target is the cell of ``full_points`` (:func:`window_infonce_loss`); the coarsest stride uses the
    whole map, the others a +-``window`` cell window. The total is the sum over strides.

    Args:
        full_features: embedding maps of the full view, one (B, C, H/s, W/s) per stride, aligned with
            ``strides``.
        crop_features: the crop view's maps, one (B, C, h/s, w/s) per stride.
        full_points: (B, N, 2) (x, y) positions in full-view pixels.
        crop_points: (B, N, 2) the same anatomical positions in crop-view pixels.
        strides: the strides of the maps (32, 16, 8, 4, 2).
        window: half-width of the window in cells (6).
        temperature: softmax temperature (1).
        eps: cosine-similarity epsilon (1e-3).

    Returns:
        ``(total, per_stride)``: scalar sum and the list of per-stride losses.
    """
    if not len(full_features) == len(crop_features) == len(strides):
        raise ValueError(
            f"{len(full_features)} full maps, {len(crop_features)} crop maps and {len(strides)} strides"
        )
    terms = []
    coarsest = max(strides)
    for full, crop, stride in zip(full_features, crop_features, strides, strict=True):
        queries = gather_point_features(crop, feature_cells(crop_points, stride, crop.shape[-2:]))
        target = feature_cells(full_points, stride, full.shape[-2:])
        similarity = cosine_similarity_maps(full, queries, eps)
        terms.append(
            window_infonce_loss(similarity, target, None if stride == coarsest else window, temperature)
        )
    return torch.stack(terms).sum(), terms


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.5) -> torch.Tensor:
    """DATR's loss: SmoothL1 (Huber with ``beta``) between predicted (B, K, H, W) maps and targets, mean."""
    return F.smooth_l1_loss(pred, target, beta=beta)
