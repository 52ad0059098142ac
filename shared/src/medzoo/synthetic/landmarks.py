"""2D X-ray-like landmark phantoms.

The phantom is a fixed "anatomy" (for a given number of landmarks): a central bony body with ``ceil(K / 2)``
long bones radiating from it. Every bone has a bright joint knob part-way along its shaft, where a short spur
branches off, and a bright condyle at its tip. Landmark ``2r`` is the tip of bone ``r``, landmark ``2r + 1``
its joint, so every landmark sits on a visible corner of the anatomy. Each image draws its own small shape
variation (bone lengths and widths) and a random similarity transform (rotation, isotropic scale,
translation) that moves the anatomy and its landmarks together: the mean shape alone cannot find the
landmarks, the image content can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from medzoo.io import write_landmark_csv, write_png
from medzoo.synthetic._render import (
    ellipse_thickness,
    pixel_grid,
    round_thickness,
    segment_distance,
    smooth_noise,
    to_uint8,
)

__all__ = [
    "LandmarkPhantomTemplate",
    "landmark_phantom_template",
    "make_landmark_phantoms",
    "render_landmark_phantom",
]

# Template lengths are in "template units": half of the image's shorter side, origin at the image centre.
_BODY_RADII = (0.2, 0.25)
_BONE_ATTENUATION = 4.0  # per template unit of path length
_SOFT_TISSUE_ATTENUATION = 0.25


@dataclass(frozen=True)
class LandmarkPhantomTemplate:
    """The mean anatomy of a phantom with ``num_landmarks`` landmarks, in template units (y points down).

    Attributes:
        angles: (R,) direction of each bone from the body centre, radians.
        lengths: (R,) distance from the centre to each bone tip.
        widths: (R,) shaft radius of each bone.
        joint_fractions: (R,) where the joint sits between the body edge (0) and the tip (1).
        num_landmarks: K; landmark ``2r`` is the tip and ``2r + 1`` the joint of bone ``r``.
    """

    angles: np.ndarray
    lengths: np.ndarray
    widths: np.ndarray
    joint_fractions: np.ndarray
    num_landmarks: int

    def points(self, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tip and joint positions, each (R, 2) xy, for the given bone lengths (default: the template's)."""
        lengths = self.lengths if lengths is None else lengths
        direction = np.stack([np.cos(self.angles), np.sin(self.angles)], axis=1)
        body_edge = 1.0 / np.hypot(np.cos(self.angles) / _BODY_RADII[0], np.sin(self.angles) / _BODY_RADII[1])
        joint_radius = body_edge + self.joint_fractions * (lengths - body_edge)
        return direction * lengths[:, None], direction * joint_radius[:, None]


def landmark_phantom_template(num_landmarks: int) -> LandmarkPhantomTemplate:
    """The fixed phantom anatomy for ``num_landmarks`` (K >= 1) landmarks; bones are spread evenly around."""
    if num_landmarks < 1:
        raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
    num_bones = math.ceil(num_landmarks / 2)
    index = np.arange(num_bones, dtype=np.float64)
    # Smooth, index-based variation so that the bones differ from each other without any randomness.
    return LandmarkPhantomTemplate(
        angles=-np.pi / 2 + 2 * np.pi * index / num_bones + 0.25 * np.pi / num_bones,
        lengths=0.67 + 0.06 * np.sin(2.3 * index + 0.5),
        widths=0.045 + 0.01 * np.cos(1.7 * index),
        joint_fractions=0.5 + 0.08 * np.sin(3.1 * index + 1.0),
        num_landmarks=num_landmarks,
    )


def render_landmark_phantom(
    rng: np.random.Generator,
    num_landmarks: int = 6,
    size: tuple[int, int] = (256, 256),
    *,
    rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    translation: float = 0.06,
    shape_jitter: float = 0.04,
    noise_std: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom image and its landmarks.

    Args:
        rng: the random generator (consumed).
        num_landmarks: K.
        size: (H, W) in pixels.
        rotation_deg: rotation drawn uniformly in ``[-rotation_deg, rotation_deg]``.
        scale_range: isotropic scale drawn uniformly in this range.
        translation: shift drawn uniformly in ``[-translation, translation]`` per axis, in template units
            (half the shorter image side).
        shape_jitter: relative per-bone length/width variation of this "patient".
        noise_std: std of the white detector noise on the [0, 1] intensity scale.

    Returns:
        ``(image, coords)``: image (H, W) uint8; coords (K, 2) float64 (x, y) pixel centres, inside the image.
    """
    height, width = size
    template = landmark_phantom_template(num_landmarks)
    num_bones = len(template.angles)
    lengths = template.lengths * rng.uniform(1 - shape_jitter, 1 + shape_jitter, num_bones)
    widths = template.widths * rng.uniform(1 - 2 * shape_jitter, 1 + 2 * shape_jitter, num_bones)
    angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
    scale = rng.uniform(*scale_range)
    shift = rng.uniform(-translation, translation, 2)

    unit = min(height, width) / 2.0
    center = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def to_pixels(points: np.ndarray) -> np.ndarray:
        return center + unit * (scale * points @ rotation.T + shift)

    tips, joints = template.points(lengths)
    spur_direction = np.stack([np.cos(template.angles + 0.8), np.sin(template.angles + 0.8)], axis=1)
    spur_ends = joints + 0.12 * spur_direction
    tips_px, joints_px, spurs_px = to_pixels(tips), to_pixels(joints), to_pixels(spur_ends)
    body_px = to_pixels(np.zeros((1, 2)))[0]
    px_per_unit = unit * scale

    xs, ys = pixel_grid(height, width)
    bone = ellipse_thickness(
        xs,
        ys,
        tuple(body_px),
        (px_per_unit * _BODY_RADII[0], px_per_unit * _BODY_RADII[1]),
        angle=angle,
        depth=0.07 * px_per_unit,
    )
    for r in range(num_bones):
        radius = widths[r] * px_per_unit
        bone += round_thickness(segment_distance(xs, ys, body_px, tips_px[r]), radius)
        bone += round_thickness(segment_distance(xs, ys, joints_px[r], spurs_px[r]), 0.6 * radius)
        bone += round_thickness(np.hypot(xs - tips_px[r, 0], ys - tips_px[r, 1]), 1.8 * radius)
        bone += round_thickness(np.hypot(xs - joints_px[r, 0], ys - joints_px[r, 1]), 1.5 * radius)
    soft = ellipse_thickness(xs, ys, tuple(body_px), (0.95 * px_per_unit, 0.95 * px_per_unit), angle=angle)
    path = (_BONE_ATTENUATION * bone + _SOFT_TISSUE_ATTENUATION * soft) / px_per_unit
    attenuation = 1.0 - np.exp(-path)

    # Detector: a smooth exposure gradient and low-frequency mottle, then white noise.
    gradient = 0.05 * (ys / max(height - 1, 1) - 0.5) * rng.choice([-1.0, 1.0])
    mottle = 0.03 * smooth_noise(rng, (height, width), sigma=min(height, width) / 10)
    image = 0.08 + 0.85 * attenuation + gradient + mottle + noise_std * rng.standard_normal((height, width))

    coords = np.empty((num_landmarks, 2), dtype=np.float64)
    coords[0::2] = tips_px[: (num_landmarks + 1) // 2]
    coords[1::2] = joints_px[: num_landmarks // 2]
    return to_uint8(image), coords


def make_landmark_phantoms(
    root: str | PathLike,
    *,
    n_images: int = 16,
    num_landmarks: int = 6,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    **render_kwargs: float,
) -> Path:
    """Write a landmark-detection dataset of X-ray-like phantoms.

    Layout::

        root/images/phantom_0000.png ...   uint8 grey, (H, W) = size
        root/landmarks.csv                 columns image, x0, y0, ..., x{K-1}, y{K-1}

    ``image`` is the file name inside ``images/``; coordinates are float pixels, (x, y) = (column, row), with
    pixel centres at integers. Image ``i`` depends only on ``(seed, i)`` and the render arguments, so a larger
    ``n_images`` extends a dataset without changing its first images.

    Args:
        root: output folder (created).
        n_images: number of images.
        num_landmarks: K >= 1; landmark ``2r`` is the tip and ``2r + 1`` the joint of bone ``r``.
        size: (H, W) in pixels.
        seed: the dataset seed.
        render_kwargs: forwarded to :func:`render_landmark_phantom` (jitter ranges, noise).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    landmarks: dict[str, np.ndarray] = {}
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_images)):
        image, coords = render_landmark_phantom(
            np.random.default_rng(child), num_landmarks, size, **render_kwargs
        )
        name = f"phantom_{i:04d}.png"
        write_png(root / "images" / name, image)
        landmarks[name] = coords
    write_landmark_csv(root / "landmarks.csv", landmarks)
    return root
