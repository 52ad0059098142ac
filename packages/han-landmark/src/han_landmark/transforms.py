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


def random_affine_matrix(
    rng: np.random.Generator,
    size_hw: Sequence[int],
    rotation_deg: float = 40.0,
    rotation_prob: float = 0.6,
    scale_factor: float = 0.5,
    translation: float = 0.15,
    flip: bool = False,
) -> np.ndarray:
    """A random similarity transform about the image centre (3x3, input pixels -> augmented pixels).

    Rotation uniform in ``[-rotation_deg, rotation_deg]`` and isotropic scale uniform in
    ``[1 - scale_factor, 1 + scale_factor]``, together with probability ``rotation_prob`` (as the
    reference's ``rot_prob``); translation uniform in ``[-translation, translation]`` of the image size per
    axis; a horizontal flip first when ``flip``.
    """
    height, width = size_hw
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    angle, scale = 0.0, 1.0
    if rng.random() < rotation_prob:
        angle = math.radians(rng.uniform(-rotation_deg, rotation_deg))
        scale = rng.uniform(1.0 - scale_factor, 1.0 + scale_factor)
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
    """Training augmentation, as in the paper's ISBI 2015 setting.

    ``flip_pairs`` are the left/right landmark pairs; a horizontal flip (probability ``flip_prob``) swaps
    each pair and is only used when pairs are declared (cephalograms declare none).
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
