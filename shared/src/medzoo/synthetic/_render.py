"""Small numpy rasterisers shared by the synthetic generators.

Everything here draws *projection thickness* maps: an X-ray image is brighter where more dense material lies
along the ray, so a cylinder (a bone shaft) seen from the side has thickness ``2 sqrt(r^2 - d^2)`` at distance
``d`` from its axis and a sphere (a condyle, a nodule) the same profile around its centre. Summing these maps
and passing them through Beer-Lambert (``1 - exp(-mu t)``) gives images whose bright structures look like
bone or soft tissue on a radiograph rather than like flat cartoon shapes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel-centre coordinates, each (H, W) float64; pixel (row i, col j) has centre (j, i)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    return xs, ys


def segment_distance(xs: np.ndarray, ys: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of every grid point to the segment ``start -> end`` (both (2,) xy)."""
    direction = end - start
    length_sq = max(float(direction @ direction), 1e-12)
    t = ((xs - start[0]) * direction[0] + (ys - start[1]) * direction[1]) / length_sq
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(xs - (start[0] + t * direction[0]), ys - (start[1] + t * direction[1]))


def round_thickness(distance: np.ndarray, radius: float) -> np.ndarray:
    """Chord length through a cylinder/sphere of ``radius`` at ``distance`` from its axis/centre."""
    return 2.0 * np.sqrt(np.clip(radius**2 - distance**2, 0.0, None))


def ellipse_thickness(
    xs: np.ndarray,
    ys: np.ndarray,
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float = 0.0,
    depth: float | None = None,
) -> np.ndarray:
    """Chord length through an ellipsoid with in-plane ``radii`` (rx, ry) rotated by ``angle`` radians.

    ``depth`` is the semi-axis along the ray (default: the smaller in-plane radius).
    """
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xs - center[0], ys - center[1]
    u = (cos * dx + sin * dy) / radii[0]
    v = (-sin * dx + cos * dy) / radii[1]
    depth = min(radii) if depth is None else depth
    return 2.0 * depth * np.sqrt(np.clip(1.0 - u**2 - v**2, 0.0, None))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise: white noise blurred by a Gaussian of ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="reflect")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Map [0, 1] floats to uint8, clipping out-of-range values."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
