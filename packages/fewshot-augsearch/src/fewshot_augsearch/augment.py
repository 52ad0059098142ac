"""The augmentation family theta: affine (rotate, shift, shear, scale), elastic (alpha, sigma), gamma,
brightness and contrast, applied to a 2D slice and its mask.

theta is :class:`AugmentationParams` (ranges), saved to / loaded from YAML (``search`` writes it, ``fit``
reads it through ``--data.augmentation``). :func:`scale_params` moves every range towards (factor < 1) or away
from (factor > 1) the identity, which is how the search explores theta.

Images are float tensors (C, H, W) (any intensity range); masks (H, W) integer or float. Draws come from a
``numpy.random.Generator`` so that episodes are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from scipy.ndimage import gaussian_filter

from medzoo.errors import MedzooDataError

__all__ = [
    "AUGMENTATION_GROUPS",
    "AugmentationParams",
    "augment",
    "load_params",
    "sample_transform",
    "save_params",
    "scale_params",
]


@dataclass(frozen=True)
class AugmentationParams:
    """Ranges of every augmentation (theta). Defaults: SSL-ALPNet's ``sabs_aug`` (no flips).

    Attributes:
        rotate: rotation angle uniform in [-rotate, rotate] degrees.
        shift: translation uniform in [-shift, shift] pixels along each axis (at the working image size).
        shear: shear angle uniform in [-shear, shear] degrees.
        scale: isotropic zoom uniform in [scale[0], scale[1]].
        elastic_alpha: elastic displacement magnitude in pixels (0 = off).
        elastic_sigma: Gaussian smoothing (pixels) of the elastic displacement noise.
        gamma: gamma uniform in [gamma[0], gamma[1]] applied on the min-max range of the slice.
        brightness: additive shift uniform in [-brightness, brightness] x the slice's intensity range.
        contrast: multiplicative factor uniform in [1 - contrast, 1 + contrast] around the slice mean.
    """

    rotate: float = 5.0
    shift: float = 5.0
    shear: float = 5.0
    scale: tuple[float, float] = (0.9, 1.2)
    elastic_alpha: float = 10.0
    elastic_sigma: float = 5.0
    gamma: tuple[float, float] = (0.5, 1.5)
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotate", "shift", "shear", "elastic_alpha", "brightness", "contrast"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise MedzooDataError(f"augmentation.{name}", repr(getattr(self, name)), "a number >= 0")
        if self.elastic_sigma <= 0:
            raise MedzooDataError("augmentation.elastic_sigma", repr(self.elastic_sigma), "a number > 0")
        for name in ("scale", "gamma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise MedzooDataError(f"augmentation.{name}", repr((lo, hi)), "a range 0 < low <= high")
        if self.contrast >= 1:
            raise MedzooDataError("augmentation.contrast", repr(self.contrast), "a number in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "augmentation") -> AugmentationParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MedzooDataError(where, f"unknown keys {unknown}", f"keys among {sorted(known)}")
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("scale", "gamma"):
                if not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise MedzooDataError(f"{where}.{key}", repr(value), "a [low, high] pair")
                parsed[key] = (float(value[0]), float(value[1]))
            else:
                parsed[key] = float(value)
        return cls(**parsed)


# Groups the search scales together: one factor per group (stepwise growth treats each group alone).
AUGMENTATION_GROUPS: dict[str, tuple[str, ...]] = {
    "affine": ("rotate", "shift", "shear", "scale"),
    "elastic": ("elastic_alpha",),
    "gamma": ("gamma",),
    "brightness_contrast": ("brightness", "contrast"),
}


def scale_params(params: AugmentationParams, factors: dict[str, float] | float) -> AugmentationParams:
    """Scale every range's distance from the identity by a factor per group (0 = off, 1 = unchanged).

    ``rotate/shift/shear/elastic_alpha/brightness/contrast`` are multiplied; a range (lo, hi) around 1 becomes
    (1 - f (1 - lo), 1 + f (hi - 1)), kept above 0.05 (scale, gamma) and contrast below 0.95.
    """
    if not isinstance(factors, dict):
        factors = dict.fromkeys(AUGMENTATION_GROUPS, float(factors))
    unknown = sorted(set(factors) - set(AUGMENTATION_GROUPS))
    if unknown:
        raise MedzooDataError(
            "augmentation factors", f"groups {unknown}", f"groups among {list(AUGMENTATION_GROUPS)}"
        )
    changes: dict[str, Any] = {}
    for group, factor in factors.items():
        if factor < 0:
            raise MedzooDataError(f"augmentation factor {group}", repr(factor), "a factor >= 0")
        for name in AUGMENTATION_GROUPS[group]:
            value = getattr(params, name)
            if isinstance(value, tuple):
                changes[name] = (max(0.05, 1 - factor * (1 - value[0])), 1 + factor * (value[1] - 1))
            elif name == "contrast":
                changes[name] = min(0.95, factor * value)
            else:
                changes[name] = factor * value
    return replace(params, **changes)


def save_params(path: str | Path, params: AugmentationParams, extra: dict[str, Any] | None = None) -> Path:
    """Write theta as block-style YAML (atomic): ``augmentation: {...}`` plus optional ``search`` metadata."""
    from medzoo.io import write_text

    document: dict[str, Any] = {"augmentation": params.to_dict()}
    if extra:
        document["search"] = extra
    return write_text(Path(path), yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def load_params(path: str | Path) -> AugmentationParams:
    """Read theta from a YAML written by :func:`save_params` (or a bare mapping of the fields)."""
    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(
            path, "no such file", "an augmentation YAML written by `fewshot-augsearch search`"
        )
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise MedzooDataError(path, f"invalid YAML ({error})", "an augmentation YAML") from None
    if not isinstance(document, dict):
        raise MedzooDataError(path, repr(type(document).__name__), "a YAML mapping")
    values = document.get("augmentation", document)
    if not isinstance(values, dict):
        raise MedzooDataError(f"{path}: augmentation", repr(values), "a mapping of augmentation ranges")
    return AugmentationParams.from_dict(values, where=f"{path}: augmentation")


@dataclass(frozen=True)
class SampledTransform:
    """One draw of theta: geometry (2x3 affine on normalised coordinates + displacement) and intensity."""

    theta: torch.Tensor  # (2, 3) affine matrix for F.affine_grid (output -> input, normalised coordinates)
    displacement: torch.Tensor | None  # (H, W, 2) elastic displacement in normalised coordinates, or None
    gamma: float
    brightness: float
    contrast: float


def _affine_matrix(
    rotate: float, shear: float, scale: float, shift: tuple[float, float], size: tuple[int, int]
):
    """Output->input 2x3 affine in normalised [-1, 1] coordinates (x = width, y = height)."""
    h, w = size
    r, s = math.radians(rotate), math.radians(shear)
    # forward map: scale, then shear along x, then rotate, then shift (pixels -> normalised units)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    sh = np.array([[1.0, math.tan(s)], [0.0, 1.0]])
    forward = rot @ sh * scale
    inverse = np.linalg.inv(forward)
    t = np.array([2 * shift[0] / max(w - 1, 1), 2 * shift[1] / max(h - 1, 1)])
    return torch.as_tensor(np.concatenate([inverse, (-inverse @ t)[:, None]], axis=1), dtype=torch.float32)


def sample_transform(
    params: AugmentationParams, size: tuple[int, int], rng: np.random.Generator
) -> SampledTransform:
    """Draw one transform of theta for an image of ``size`` (H, W)."""
    h, w = size
    matrix = _affine_matrix(
        rng.uniform(-params.rotate, params.rotate),
        rng.uniform(-params.shear, params.shear),
        rng.uniform(*params.scale),
        (rng.uniform(-params.shift, params.shift), rng.uniform(-params.shift, params.shift)),
        size,
    )
    displacement = None
    if params.elastic_alpha > 0:
        # Uniform noise in [-1, 1], Gaussian-smoothed, times alpha pixels (Simard et al.; as the reference).
        noise = rng.uniform(-1, 1, size=(2, h, w))
        field = np.stack(
            [gaussian_filter(n, params.elastic_sigma, mode="constant") * params.elastic_alpha for n in noise]
        )
        scale = np.array([2 / max(w - 1, 1), 2 / max(h - 1, 1)])[:, None, None]
        displacement = torch.as_tensor((field * scale).transpose(1, 2, 0), dtype=torch.float32)
    return SampledTransform(
        matrix,
        displacement,
        float(rng.uniform(*params.gamma)),
        float(rng.uniform(-params.brightness, params.brightness)),
        float(rng.uniform(1 - params.contrast, 1 + params.contrast)),
    )


def _apply_intensity(image: torch.Tensor, t: SampledTransform) -> torch.Tensor:
    lo, hi = image.min(), image.max()
    span = hi - lo + 1e-5
    # Gamma on the slice's own range, as the reference: span * ((x - min) / span) ** gamma + min.
    image = span * ((image - lo + 1e-5) / span).clamp_min(0) ** t.gamma + lo
    mean = image.mean()
    return (image - mean) * t.contrast + mean + t.brightness * span


def augment(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    params: AugmentationParams,
    rng: np.random.Generator,
    transform: SampledTransform | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply one random draw of theta to ``image`` (C, H, W) and ``mask`` (H, W) (nearest neighbour).

    Geometry (affine + elastic) is one resampling, bilinear for the image with border padding (so no
    artificial black corners), nearest with zeros for the mask; then the intensity transforms.

    Returns:
        (image (C, H, W) float32, mask (H, W) same dtype as the input mask, or None).
    """
    if image.ndim != 3:
        raise MedzooDataError("augment", f"image of shape {tuple(image.shape)}", "(C, H, W)")
    size = tuple(image.shape[-2:])
    t = transform if transform is not None else sample_transform(params, size, rng)
    grid = F.affine_grid(t.theta[None], [1, 1, *size], align_corners=True)
    if t.displacement is not None:
        grid = grid + t.displacement[None]
    out = F.grid_sample(
        image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )[0]
    out = _apply_intensity(out, t)
    warped_mask = None
    if mask is not None:
        warped = F.grid_sample(
            mask[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True
        )
        warped_mask = warped[0, 0].to(mask.dtype)
    return out, warped_mask
