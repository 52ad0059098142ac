"""Template matching of stage 1 (pseudo-labels) and the template picker.

Coordinates follow medzoo's convention: ``(x, y) = (column, row)`` float pixels, pixel centres at integers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from uod_oneshot.losses import cosine_similarity_maps, feature_cells, gather_point_features

__all__ = ["match_landmarks", "most_representative", "template_features"]


def template_features(
    features: Sequence[torch.Tensor], points: torch.Tensor, strides: Sequence[int]
) -> list[torch.Tensor]:
    """The template's embedding at each landmark, per scale.

    Args:
        features: the template's maps, one (1, C, H/s, W/s) per stride.
        points: (K, 2) landmark (x, y) in input pixels.
        strides: the maps' strides.

    Returns:
        one (K, C) tensor per stride.
    """
    out = []
    for feats, stride in zip(features, strides, strict=True):
        cells = feature_cells(points[None].to(feats.device), stride, feats.shape[-2:])
        out.append(gather_point_features(feats[:1], cells)[0])
    return out


def match_landmarks(
    features: Sequence[torch.Tensor],
    queries: Sequence[torch.Tensor],
    strides: Sequence[int],
    output_stride: int = 2,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find each template landmark in target images: the product over scales of upsampled cosine maps.

    Every scale's cosine map (clamped to [0, 1]) is bilinearly resized to the ``output_stride`` grid and
    the maps are multiplied; the argmax cell is the landmark. With constant (degenerate) features every
    cell ties and the first cell wins, as in the reference's (0, 0).

    Args:
        features: the targets' maps, one (B, C, H/s, W/s) per stride.
        queries: the template's features, one (K, C) per stride (:func:`template_features`).
        strides: the maps' strides, e.g. (32, 16, 8, 4, 2).
        output_stride: the grid the prediction lands on (2 in UOD).
        eps: cosine-similarity epsilon.

    Returns:
        ``(coords, scores)``: (B, K, 2) (x, y) input pixels at the centre of the winning cell and (B, K) the
        product's maximum.
    """
    reference = features[list(strides).index(output_stride)] if output_stride in strides else None
    if reference is None:
        raise ValueError(f"output_stride {output_stride} is not one of the strides {tuple(strides)}")
    size = reference.shape[-2:]
    product = None
    for feats, query, stride in zip(features, queries, strides, strict=True):
        batch = feats.shape[0]
        similarity = cosine_similarity_maps(feats, query[None].expand(batch, -1, -1).to(feats), eps)
        similarity = similarity.clamp(0.0, 1.0)
        if stride != output_stride:
            similarity = F.interpolate(similarity, size=size, mode="bilinear", align_corners=False)
        product = similarity if product is None else product * similarity
    flat = product.flatten(2)
    scores = flat.amax(dim=2)
    # near-ties (within float rounding of the interpolation) go to the first cell in raster order
    index = (flat >= scores[..., None] - 1e-6).to(torch.uint8).argmax(dim=2)
    width = size[1]
    cols, rows = index % width, torch.div(index, width, rounding_mode="floor")
    # cell j covers input pixels [j*s, j*s + s - 1]; report its centre
    centre = (output_stride - 1) / 2.0
    coords = torch.stack([cols * output_stride + centre, rows * output_stride + centre], dim=-1).float()
    return coords, scores


def most_representative(descriptors: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The medoid: the row with the smallest mean cosine distance to all the others.

    Args:
        descriptors: (N, D) one descriptor per candidate image (N >= 1).

    Returns:
        ``(index, mean_distance)``: the medoid's row and (N,) every row's mean distance to the others.
    """
    if descriptors.ndim != 2 or len(descriptors) == 0:
        raise ValueError(f"descriptors must be (N >= 1, D), got {tuple(descriptors.shape)}")
    unit = F.normalize(descriptors.double(), dim=1)
    distance = 1.0 - unit @ unit.T
    mean = distance.sum(dim=1) / max(len(descriptors) - 1, 1)
    return int(torch.argmin(mean)), mean
