"""Intensities to 8-bit for overlays and previews (one helper for every package)."""

from __future__ import annotations

import os

import numpy as np

from medzoo.errors import MedzooDataError

__all__ = ["read_grey_uint8", "to_uint8"]


def to_uint8(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linearly map ``image`` from ``[low, high]`` to ``0..255`` (uint8), clipping outside the window.

    ``low``/``high`` default to the finite minimum and maximum of the image (a min-max stretch); a constant
    image maps to 0. Non-finite values map to 0. uint8 input with no window is returned unchanged (a copy).

    Args:
        image: any real array, e.g. (H, W), (H, W, C) or (D, H, W).
        low: intensity shown as 0 (e.g. a CT window's lower bound).
        high: intensity shown as 255.
    """
    values = np.asarray(image)
    if values.dtype == np.uint8 and low is None and high is None:
        return values.copy()
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise MedzooDataError("to_uint8", f"an array of dtype {values.dtype}", "a real-valued array")
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if low is None or high is None:
        if not finite.any():
            return np.zeros(values.shape, dtype=np.uint8)
        low = float(values[finite].min()) if low is None else float(low)
        high = float(values[finite].max()) if high is None else float(high)
    if high < low:
        raise MedzooDataError("to_uint8", f"window low={low} > high={high}", "low <= high")
    if high == low:
        scaled = np.zeros_like(values)
    else:
        scaled = (np.clip(values, low, high) - low) / (high - low) * 255.0
    scaled[~finite] = 0.0
    return np.round(scaled).astype(np.uint8)


def read_grey_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read any 2D image (PNG, JPEG, DICOM, ...) as (H, W) uint8 grey: what CXR models take as input.

    Colour is converted to grey (ITU-R 601-2 luma, as Pillow's ``convert("L")``); other dtypes (16-bit PNG,
    rescaled DICOM) are min-max stretched with :func:`to_uint8`.

    Raises:
        MedzooDataError: whatever ``read_image`` refuses (missing, corrupt, not 2D, ...).
    """
    from PIL import Image

    from medzoo.io.images import read_image

    array = read_image(path).array
    if array.ndim == 3:
        array = np.asarray(Image.fromarray(to_uint8(array[..., :3])).convert("L"))
    return to_uint8(array)
