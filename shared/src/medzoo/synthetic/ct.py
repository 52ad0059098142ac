"""3D CT-like volumes with organ label maps, written in the Medical Segmentation Decathlon layout.

A volume is an elliptic body cylinder (soft tissue, ~40 HU, with a subcutaneous fat rim at ~-100 HU) in air
(-1000 HU), a posterior spine-like cylinder (~700 HU) and ``num_organs`` smooth, blobby organs, each with
its own mean HU. Every voxel keeps the HU of the single tissue it belongs to plus white noise, so an organ's
label voxels sit in a narrow, known HU band (:func:`ct_organ_table`).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from medzoo.io import write_json, write_volume
from medzoo.synthetic._render import smooth_noise

__all__ = [
    "AIR_HU",
    "CT_ORGANS",
    "FAT_HU",
    "SOFT_TISSUE_HU",
    "SPINE_HU",
    "ct_organ_table",
    "make_ct_dataset",
    "ras_affine",
    "render_ct_volume",
]

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
SPINE_HU = 700.0

# (name, mean HU, centre (x, y, z) and radii in body-normalised units where the volume spans [-1, 1]).
# RAS+: +x points to the patient's right, +y anterior, +z superior; the spine is posterior (negative y).
CT_ORGANS: tuple[tuple[str, float, tuple[float, float, float], tuple[float, float, float]], ...] = (
    ("liver", 110.0, (0.35, 0.05, 0.25), (0.3, 0.32, 0.35)),
    ("spleen", 170.0, (-0.45, -0.1, 0.3), (0.16, 0.18, 0.24)),
    ("kidney_right", 230.0, (0.3, -0.3, -0.25), (0.13, 0.12, 0.22)),
    ("kidney_left", 290.0, (-0.3, -0.3, -0.25), (0.13, 0.12, 0.22)),
    ("pancreas", 350.0, (0.05, 0.05, -0.05), (0.22, 0.08, 0.08)),
    ("bladder", -20.0, (0.0, 0.15, -0.72), (0.15, 0.15, 0.13)),
)
"""The first organs of every volume; more than six organs are placed on a ring with HU 400, 450, ..."""

_NOISE_HU = 8.0


def ct_organ_table(num_organs: int) -> list[tuple[str, float, tuple[float, ...], tuple[float, ...]]]:
    """(name, mean HU, centre, radii) for labels 1..num_organs; centres/radii in normalised [-1, 1] units."""
    table = list(CT_ORGANS[:num_organs])
    for k in range(len(table), num_organs):  # extra organs: small blobs on a ring around the body axis
        angle = 2 * np.pi * k / max(num_organs - len(CT_ORGANS), 1)
        centre = (0.45 * np.cos(angle), 0.25 * np.sin(angle) + 0.1, 0.55 - 0.1 * (k % 3))
        table.append((f"organ_{k + 1}", 400.0 + 50.0 * (k - len(CT_ORGANS)), centre, (0.08, 0.08, 0.1)))
    return table


def _body_grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates normalised to [-1, 1] along every axis, each (X, Y, Z)."""
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def render_ct_volume(
    rng: np.random.Generator, shape: tuple[int, int, int] = (64, 64, 64), num_organs: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one CT-like volume and its label map.

    Args:
        rng: the random generator (consumed).
        shape: (X, Y, Z) voxels; axes are RAS+ (x towards the patient's right, y anterior, z superior).
        num_organs: labels 1..num_organs, one per organ of :func:`ct_organ_table`.

    Returns:
        ``(hu, labels)``: hu (X, Y, Z) int16 Hounsfield units in [-1024, 3071]; labels (X, Y, Z) uint8 with
        0 = background (air, soft tissue, fat, spine) and k = organ k.
    """
    x, y, z = _body_grid(shape)
    body_radii = rng.uniform(0.82, 0.92), rng.uniform(0.6, 0.7)
    # The body tapers a little towards both ends of the z range, as a trunk does.
    body_r = np.sqrt((x / body_radii[0]) ** 2 + ((y + 0.05) / body_radii[1]) ** 2) * (1 + 0.08 * z**2)
    body = body_r < 1.0
    fat = body & (body_r > 0.88)
    spine = ((x / 0.11) ** 2 + ((y + 0.45) / 0.11) ** 2 < 1.0) & body

    # Soft tissue with a slow, low-amplitude drift so that it is not perfectly flat.
    hu = np.full(shape, AIR_HU)
    hu[body] = SOFT_TISSUE_HU + 6.0 * smooth_noise(rng, shape, sigma=max(shape) / 8)[body]
    hu[fat] = FAT_HU
    labels = np.zeros(shape, dtype=np.uint8)
    for label, (_, organ_hu, centre, radii) in enumerate(ct_organ_table(num_organs), start=1):
        centre = np.asarray(centre) + rng.normal(0.0, 0.03, 3)
        radii = np.asarray(radii) * rng.uniform(0.9, 1.1, 3)
        # A lumpy ellipsoid: the radius is modulated by smooth noise so organs are not perfect ellipsoids.
        lumps = 1.0 + 0.12 * smooth_noise(rng, shape, sigma=max(shape) / 10)
        inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
        inside = inside + ((z - centre[2]) / radii[2]) ** 2 < lumps**2
        inside &= body & ~fat & ~spine
        labels[inside] = label
        hu[inside] = organ_hu
    hu[spine] = SPINE_HU
    hu += _NOISE_HU * rng.standard_normal(shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), labels


def ras_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel -> RAS mm affine with the given spacing and the volume centred on the world origin."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(spacing, dtype=np.float64)
    return affine


def make_ct_dataset(
    root: str | PathLike,
    *,
    n_volumes: int = 4,
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
    num_organs: int = 4,
    seed: int = 0,
) -> Path:
    """Write a CT segmentation dataset in the Medical Segmentation Decathlon layout.

    Layout::

        root/imagesTr/synct_000.nii.gz ...  int16 HU, (X, Y, Z) = shape, RAS affine with ``spacing`` mm
        root/labelsTr/synct_000.nii.gz ...  uint8 labels 0 = background, 1..num_organs (same affine)
        root/dataset.json                   MSD: name, modality {"0": "CT"}, labels {"0": "background", ...},
                                            numTraining, training [{image, label}] ("./imagesTr/..."), test []

    Volume ``i`` depends only on ``(seed, i)``. Organ names and mean HU come from :func:`ct_organ_table`.

    Args:
        root: output folder (created).
        n_volumes: number of image/label pairs.
        shape: (X, Y, Z) voxels.
        spacing: (x, y, z) mm per voxel.
        num_organs: number of foreground labels (>= 1).
        seed: the dataset seed.

    Returns:
        ``root`` as a Path.
    """
    if num_organs < 1 or num_organs > 255:
        raise ValueError(f"num_organs must be in [1, 255], got {num_organs}")
    root = Path(root)
    affine = ras_affine(shape, spacing)
    training = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_volumes)):
        hu, labels = render_ct_volume(np.random.default_rng(child), shape, num_organs)
        name = f"synct_{i:03d}.nii.gz"
        write_volume(root / "imagesTr" / name, hu, affine)
        write_volume(root / "labelsTr" / name, labels, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    organs = ct_organ_table(num_organs)
    write_json(
        root / "dataset.json",
        {
            "name": "medzoo-synthetic-ct",
            "description": "Synthetic CT-like volumes with organ label maps (medzoo.synthetic)",
            "tensorImageSize": "3D",
            "reference": "medzoo",
            "licence": "Apache-2.0",
            "release": "0.1.0",
            "modality": {"0": "CT"},
            "labels": {"0": "background", **{str(k): organ[0] for k, organ in enumerate(organs, start=1)}},
            "numTraining": n_volumes,
            "numTest": 0,
            "training": training,
            "test": [],
        },
    )
    return root
