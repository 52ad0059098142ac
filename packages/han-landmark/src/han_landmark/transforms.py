"""Invertible resizing and the training augmentation (one affine warp plus photometric changes).

Every sample carries the 3x3 matrix ``to_input`` that maps ORIGINAL image pixels to network-input pixels
(resize, then augmentation when training), so predictions map back to the original image exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- geometry


def resize_matrix(source_hw: Sequence[int], target_hw: Sequence[int]) -> np.ndarray:
    """3x3 matrix from pixel coordinates of a ``source_hw`` image to the same image resized to ``target_hw``.

    Pixel centres are at integers, so a pixel's centre ``x`` maps to ``(x + 0.5) * W'/W - 0.5``: the
    convention of ``torch.nn.functional.interpolate(..., align_corners=False)``.
    """
    scale_y, scale_x = target_hw[0] / source_hw[0], target_hw[1] / source_hw[1]
    return np.array(
        [[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]]
    )


def fit_matrix(
    source_hw: Sequence[int], target_hw: Sequence[int], keep_aspect: bool = False, padding: float = 1.0
) -> tuple[np.ndarray, tuple[int, int]]:
    """How an image of ``source_hw`` is placed into a ``target_hw`` input.

    Without ``keep_aspect`` the image is stretched to fill the input (``padding`` must be 1). With it, the
    image is scaled by one factor so that ``padding`` times its size fits the input, and centred (the
    reference's top-down affine with the whole image as the box and ``padding=1.25``); the rest is black.

    Returns:
        the 3x3 matrix original pixels -> input pixels (pixel centres at integers), and the (h, w) of the
        resized image, which sits at the integer offset ``((H' - h) // 2, (W' - w) // 2)``: an antialiased
        resize plus an exact shift. Rounding the resized size to whole pixels keeps the aspect ratio to
        within one pixel.
    """
    if not keep_aspect:
        if padding != 1.0:
            raise ValueError(f"padding={padding} needs keep_aspect=True")
        return resize_matrix(source_hw, target_hw), (int(target_hw[0]), int(target_hw[1]))
    scale = min(target_hw[0] / (source_hw[0] * padding), target_hw[1] / (source_hw[1] * padding))
    resized = (max(1, round(source_hw[0] * scale)), max(1, round(source_hw[1] * scale)))
    offset_y, offset_x = (target_hw[0] - resized[0]) // 2, (target_hw[1] - resized[1]) // 2
    shift = np.array([[1.0, 0.0, offset_x], [0.0, 1.0, offset_y], [0.0, 0.0, 1.0]])
    return shift @ resize_matrix(source_hw, resized), resized


def place_image(
    image: torch.Tensor, target_hw: Sequence[int], keep_aspect: bool = False, padding: float = 1.0
) -> tuple[torch.Tensor, np.ndarray]:
    """Antialiased resize of a (C, H, W) image into the input, per :func:`fit_matrix`.

    Returns the (C, H', W') input image and its 3x3 matrix original pixels -> input pixels.
    """
    matrix, resized = fit_matrix(image.shape[-2:], target_hw, keep_aspect, padding)
    scaled = F.interpolate(image[None], size=resized, mode="bilinear", antialias=True)[0]
    if resized == (int(target_hw[0]), int(target_hw[1])):
        return scaled, matrix
    top, left = (int(target_hw[0]) - resized[0]) // 2, (int(target_hw[1]) - resized[1]) // 2
    canvas = image.new_zeros(image.shape[0], int(target_hw[0]), int(target_hw[1]))
    canvas[:, top : top + resized[0], left : left + resized[1]] = scaled
    return canvas, matrix


def draw_scale_rotation(
    rng: np.random.Generator,
    rotation_deg: float,
    rotation_prob: float,
    scale_factor: float,
    distribution: str = "normal",
) -> tuple[float, float]:
    """(angle in degrees, isotropic scale) of one training sample.

    - ``"normal"`` (the reference's ``TopDownGetRandomScaleRotation``): scale ``clip(N(1, sf), 1 - sf,
      1 + sf)`` always; angle ``clip(N(0, rf), -2 rf, 2 rf)`` with probability ``rotation_prob``.
    - ``"uniform"``: both uniform in ``[-rf, rf]`` and ``[1 - sf, 1 + sf]``, together with probability
      ``rotation_prob``.
    """
    if distribution == "normal":
        scale = float(np.clip(rng.normal(1.0, scale_factor), 1.0 - scale_factor, 1.0 + scale_factor))
        angle = float(np.clip(rng.normal(0.0, rotation_deg), -2 * rotation_deg, 2 * rotation_deg))
        return (angle if rng.random() < rotation_prob else 0.0), scale
    if distribution != "uniform":
        raise ValueError(f"scale_rotation={distribution!r}: expected 'normal' or 'uniform'")
    if rng.random() < rotation_prob:
        return rng.uniform(-rotation_deg, rotation_deg), rng.uniform(1.0 - scale_factor, 1.0 + scale_factor)
    return 0.0, 1.0


def random_affine_matrix(
    rng: np.random.Generator,
    size_hw: Sequence[int],
    rotation_deg: float = 40.0,
    rotation_prob: float = 0.6,
    scale_factor: float = 0.5,
    translation: float = 0.15,
    flip: bool = False,
    distribution: str = "normal",
) -> np.ndarray:
    """A random similarity transform about the image centre (3x3, input pixels -> augmented pixels).

    Angle and scale from :func:`draw_scale_rotation` (``distribution``); translation uniform in
    ``[-translation, translation]`` of the image size per axis; a horizontal flip first when ``flip``.
    """
    height, width = size_hw
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    angle_deg, scale = draw_scale_rotation(rng, rotation_deg, rotation_prob, scale_factor, distribution)
    angle = math.radians(angle_deg)
    tx, ty = rng.uniform(-translation, translation, 2) * (width, height)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    centre_out = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    similarity = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], dtype=np.float64)
    centre_back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]], dtype=np.float64)
    matrix = centre_back @ similarity @ centre_out
    if flip:
        matrix = matrix @ np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    return matrix


def apply_matrix(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Apply a 3x3 (or batched (..., 3, 3)) affine matrix to (..., K, 2) (x, y) coordinates."""
    return coords @ np.swapaxes(matrix[..., :2, :2], -1, -2) + matrix[..., None, :2, 2]


def warp_image(image: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """Resample ``image`` (C, H, W) so that pixel ``p`` of the output shows input pixel ``matrix^-1 p``.

    Bilinear, zeros outside; the output has the input's size.
    """
    _, height, width = image.shape
    inverse = torch.as_tensor(np.linalg.inv(matrix), dtype=torch.float32)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inverse.T  # (H, W, 3) source pixels
    # grid_sample with align_corners=False: normalised = (2 * pixel + 1) / size - 1
    grid = torch.stack([(2 * points[..., 0] + 1) / width - 1, (2 * points[..., 1] + 1) / height - 1], dim=-1)
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[
        0
    ]


def image_to_unit_float(array: np.ndarray) -> torch.Tensor:
    """Image array (H, W) or (H, W, C) -> float tensor (3, H, W) in [0, 1].

    uint8 is divided by 255; other dtypes (16-bit, DICOM float) are min-max scaled per image. Grey images
    are repeated to 3 channels (the network is built for RGB input, as in the paper).
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    else:
        values = array.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    return (
        tensor[None].expand(3, -1, -1).clone() if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    )


def normalize_imagenet(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> ImageNet-standardised."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


# ------------------------------------------------------------------------------------------------ datasets


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation; the defaults are the reference's ISBI 2015 setting.

    ``flip_pairs`` are the left/right landmark pairs; a horizontal flip (probability ``flip_prob``) swaps
    each pair. Without pairs there is no flip, unless ``flip_without_pairs``: then the image and its
    landmarks are mirrored and the labels kept (the reference's cephalometric setting, ``swap=''``).
    ``scale_rotation`` is the distribution of :func:`draw_scale_rotation`.
    """

    rotation_deg: float = 40.0
    rotation_prob: float = 0.6
    scale_factor: float = 0.5
    translation: float = 0.15
    flip_prob: float = 0.4
    flip_pairs: tuple[tuple[int, int], ...] = ()
    photometric: bool = True
    brightness: float = 32 / 255
    contrast: tuple[float, float] = (0.5, 1.5)
    flip_without_pairs: bool = False
    scale_rotation: str = "normal"
