"""The demo's generated data: ultrasound-like nodules whose group changes intensity and texture.

Each image is a (size x size) grey speckled background with one dark (hypo-echoic) elliptical nodule whose
mask is the segmentation target. The sensitive attribute ``group`` (``A`` majority, ``B`` minority) changes
the acquisition, not the anatomy: group ``B`` images are brighter, with a coarser and stronger speckle and a
weaker nodule contrast. A segmentor trained on the mix is therefore less accurate on ``B`` by construction,
and its latent carries the group (intensity and texture are easy to read from it), which is what APPLE
removes.

Written in the generic layout that :class:`apple_fairness.data.SegmentationFairnessDataModule` reads
(``images/*.png``, ``masks/*.png`` with 0/1 labels, ``metadata.csv`` with ``image, mask, group``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from medzoo.io import write_csv, write_png

__all__ = ["DEMO_GROUPS", "make_fairness_demo", "render_nodule"]

# Per group: (background mean, nodule contrast, speckle strength, speckle blur sigma in pixels).
DEMO_GROUPS: dict[str, tuple[float, float, float, float]] = {
    "A": (0.45, 0.30, 0.08, 0.8),
    "B": (0.60, 0.20, 0.13, 1.5),
}


def render_nodule(rng: np.random.Generator, group: str, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size) uint8 and its mask (size, size) uint8 in {0, 1} for ``group``."""
    mean, contrast, speckle, sigma = DEMO_GROUPS[group]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * size
    ry, rx = rng.uniform(0.10, 0.22, size=2) * size
    angle = rng.uniform(0, np.pi)
    dy, dx = ys - cy, xs - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
    mask = (u**2 + v**2) <= 1.0
    # Soft edge so the boundary is not a one-pixel step.
    inside = np.clip(1.5 - np.sqrt(u**2 + v**2) * 1.5 + 0.5 * mask, 0, 1)
    tissue = mean + 0.05 * gaussian_filter(rng.standard_normal((size, size)), 6) * 6
    noise = gaussian_filter(rng.standard_normal((size, size)), sigma)
    noise = noise / (noise.std() + 1e-8)
    image = tissue - contrast * inside + speckle * noise
    image = np.clip(image, 0, 1)
    return np.round(image * 255).astype(np.uint8), mask.astype(np.uint8)


def make_fairness_demo(
    root: str | Path, num_images: int = 160, size: int = 64, minority_fraction: float = 0.35, seed: int = 0
) -> Path:
    """Write the demo set into ``root`` (generic layout) and return ``root/metadata.csv``.

    Image ``i`` depends only on ``(seed, i)``; group ``B`` is drawn with probability ``minority_fraction``
    (at least one image of each group whenever ``num_images >= 2``).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        group = "B" if rng.uniform() < minority_fraction else "A"
        if num_images >= 2 and i == 0:
            group = "A"
        if num_images >= 2 and i == 1:
            group = "B"
        image, mask = render_nodule(rng, group, size)
        name = f"case_{i:04d}.png"
        write_png(root / "images" / name, image)
        write_png(root / "masks" / name, mask)
        rows.append({"image": name, "mask": name, "group": group})
    return write_csv(root / "metadata.csv", pd.DataFrame(rows))
