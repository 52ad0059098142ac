"""DATR's decoding: the largest connected component above 25 % of the peak, then the mean of its pixels
above 88 % of the peak."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["decode_largest_component"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _decode_one(heatmap: np.ndarray, low: float, high: float) -> tuple[float, float]:
    peak = float(heatmap.max())
    if not np.isfinite(peak) or peak <= 0:
        return 0.0, 0.0  # nothing detected: the origin, as the reference's argmax of an empty map
    labels, count = ndimage.label(heatmap > low * peak, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    largest = 1 + int(np.argmax(sizes))  # ties: the first component in raster order
    rows, cols = np.nonzero((labels == largest) & (heatmap > high * peak))
    if rows.size == 0:  # the peak lies in a smaller component: keep the largest one's own maximum
        rows, cols = np.nonzero(labels == largest)
        best = np.argmax(heatmap[rows, cols])
        return float(cols[best]), float(rows[best])
    return float(cols.mean()), float(rows.mean())


def decode_largest_component(heatmaps: torch.Tensor, low: float = 0.25, high: float = 0.88) -> torch.Tensor:
    """Landmarks from heatmaps, robust to spurious secondary peaks.

    Per map: threshold at ``low * max``, keep the largest 8-connected component (ties: the first in raster
    order), and return the mean (x, y) of its pixels above ``high * max``.

    Args:
        heatmaps: (B, K, H, W) non-negative maps.
        low, high: the two thresholds as fractions of the map's maximum (UOD: 0.25, 0.88).

    Returns:
        (B, K, 2) float32 (x, y) pixels, on the device of ``heatmaps``; (0, 0) for an all-zero map.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, K, H, W), got {tuple(heatmaps.shape)}")
    maps = heatmaps.detach().float().cpu().numpy()
    out = np.array([[_decode_one(m, low, high) for m in image] for image in maps], dtype=np.float32)
    return torch.from_numpy(out.reshape(*maps.shape[:2], 2)).to(heatmaps.device)
