"""Landmark detection metrics: radial error, mean radial error (MRE) and successful detection rate (SDR).

Coordinates follow the medzoo convention: float ``(x, y) = (column, row)`` in pixels. Spacings are in mm per
pixel and given as ``(x, y)`` when anisotropic, so that errors come out in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.metrics._convert import check_same_shape, to_numpy

__all__ = ["mean_radial_error", "radial_errors", "successful_detection_rate"]


def _spacing_per_image(spacing: Any, num_images: int) -> np.ndarray:
    """Broadcast ``spacing`` to shape (N, 1, 2) (mm per pixel along x and y)."""
    if spacing is None:
        return np.ones((1, 1, 2))
    sp = to_numpy(spacing, dtype=np.float64)
    if sp.ndim == 0:
        sp = np.full((1, 2), float(sp))
    elif sp.shape == (num_images,):
        sp = np.repeat(sp[:, None], 2, axis=1)
    elif sp.shape == (num_images, 2):
        pass
    else:
        raise MedzooDataError(
            "spacing", f"shape {sp.shape}", f"None, a scalar, ({num_images},) or ({num_images}, 2) mm/px"
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise MedzooDataError("spacing", f"values {sp.ravel()[:4]}...", "finite positive mm per pixel")
    return sp[:, None, :]


def radial_errors(pred: Any, target: Any, spacing: Any = None) -> np.ndarray:
    """Euclidean distance between predicted and true landmarks, per image and landmark.

    Args:
        pred: predicted landmarks, shape (N, K, 2) as (x, y) pixels; numpy or torch. A single image
            (K, 2) is treated as N = 1.
        target: true landmarks, same shape as ``pred``.
        spacing: pixel size in mm. ``None`` gives errors in pixels; a scalar applies to all images;
            shape (N,) is one isotropic spacing per image; shape (N, 2) is (x, y) spacing per image.

    Returns:
        float64 array (N, K) of errors in mm (or pixels when ``spacing`` is None), >= 0. A landmark with a
        non-finite coordinate gives NaN.
    """
    p = to_numpy(pred, dtype=np.float64)
    t = to_numpy(target, dtype=np.float64)
    check_same_shape(p, t, "radial_errors", ("pred", "target"))
    if p.ndim == 2:
        p, t = p[None], t[None]
    if p.ndim != 3 or p.shape[-1] != 2:
        raise MedzooDataError("radial_errors", f"coordinates of shape {p.shape}", "(N, K, 2) as (x, y)")
    diff = (p - t) * _spacing_per_image(spacing, p.shape[0])
    return np.sqrt(np.sum(diff**2, axis=-1))


def mean_radial_error(errors: Any) -> tuple[float, float]:
    """Mean radial error and its standard deviation over every image and landmark.

    Args:
        errors: radial errors of any shape, e.g. (N, K) from :func:`radial_errors`.

    Returns:
        ``(mean, std)`` as python floats in the unit of ``errors``. The std is the population std
        (``ddof=0``, numpy's default) over all entries, as reported in the ISBI 2015 challenge papers.

    Raises:
        MedzooDataError: no errors, or NaN errors (a missing prediction or annotation): drop them first,
            e.g. ``errors[np.isfinite(errors)]``, or count them as failures with
            :func:`successful_detection_rate`.
    """
    e = to_numpy(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise MedzooDataError("mean_radial_error", "no errors", "at least one radial error")
    if np.isnan(e).any():
        raise MedzooDataError(
            "mean_radial_error", f"{int(np.isnan(e).sum())} NaN error(s) of {e.size}", "finite errors only"
        )
    return float(np.mean(e)), float(np.std(e))


def successful_detection_rate(
    errors: Any, radii: Sequence[float] = (2.0, 2.5, 3.0, 4.0)
) -> dict[float, float]:
    """Fraction of landmarks whose radial error is strictly below each radius.

    Args:
        errors: radial errors of any shape, e.g. (N, K) in mm.
        radii: radii in the unit of ``errors`` (mm for the usual SDR@2/2.5/3/4 mm).

    Returns:
        ``{radius: rate}`` with rates in [0, 1]. The comparison is strict (``error < radius``): an error
        of exactly 2.0 mm is not a success at 2 mm. NaN errors count as failures.
    """
    e = to_numpy(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise MedzooDataError("successful_detection_rate", "no errors", "at least one radial error")
    # NaN < r is False, so missing predictions count as failures.
    return {float(r): float(np.mean(e < r)) for r in radii}
