"""Data for SSL-ALPNet with a searched augmentation: scans, superpixel pseudo-labels, episodes, the 5-fold
one-shot protocol and the crops the search compares.

Volumes are read with ``medzoo.io.read_volume`` as stored (no reorientation) and cut into 2D slices along the
third voxel axis (axial in the paper's NIfTI files); each slice is resized to ``image_size`` (bilinear image,
nearest labels). Intensities (paper): CT clipped to the window [-125, 275] HU, MR clipped at its 99.5th
percentile; both then scaled to [0, 1] per scan.

Layouts (``layout``; a registry, ``auto`` picks the first that matches):

- ``alpnet``: SSL-ALPNet's preprocessed folders (``chaos_MR_T2_normalized/``, ``sabs_CT_normalized/``):
  ``image_<id>.nii.gz``, ``label_<id>.nii.gz`` and optionally ``superpix-<SCALE>_<id>.nii.gz``.
- ``msd``: Medical Segmentation Decathlon / nnU-Net: ``dataset.json`` or ``imagesTr/`` + ``labelsTr/``
  (also what the demo's ``medzoo.synthetic.make_ct_dataset`` writes).
- ``btcv``: Synapse/BTCV raw release: ``img/img<id>.nii.gz`` + ``label/label<id>.nii.gz``.

Label ids of the test organs: CHAOS T2-SPIR liver 1, right kidney 2, left kidney 3, spleen 4; Synapse/BTCV
spleen 1, right kidney 2, left kidney 3, liver 6; the synthetic demo liver 1, spleen 2, right kidney 3,
left kidney 4.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.segmentation import felzenszwalb
from torch.utils.data import Dataset

from fewshot_augsearch.augment import AugmentationParams, augment, load_params
from medzoo.errors import MedzooDataError
from medzoo.io import read_volume
from medzoo.lightning import MedzooDataModule

__all__ = [
    "LAYOUTS",
    "EpisodeDataset",
    "FewShotDataModule",
    "OneShotDataset",
    "Scan",
    "ScanFiles",
    "body_mask",
    "chunk_assignment",
    "cv_folds",
    "find_scans",
    "load_scan",
    "preprocess_intensity",
    "search_groups",
    "slice_superpixels",
    "support_slice_indices",
    "training_slices",
]

NIFTI = (".nii.gz", ".nii")
CT_WINDOW = (-125.0, 275.0)


@dataclass(frozen=True)
class ScanFiles:
    """One scan's files: ``image`` and optionally ``label`` and ``superpixels`` (NIfTI paths)."""

    scan_id: str
    image: Path
    label: Path | None = None
    superpixels: Path | None = None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _natural_key(scan: ScanFiles) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", scan.scan_id))


def _alpnet_layout(root: Path, superpixel_scale: str = "MIDDLE") -> list[ScanFiles]:
    scans = []
    for image in sorted(root.glob("image_*.nii*")):
        scan_id = _stem(image)[len("image_") :]
        label = next(iter(sorted(root.glob(f"label_{scan_id}.nii*"))), None)
        superpix = next(iter(sorted(root.glob(f"superpix-{superpixel_scale}_{scan_id}.nii*"))), None)
        scans.append(ScanFiles(scan_id, image, label, superpix))
    return scans


def _msd_layout(root: Path, superpixel_scale: str = "MIDDLE") -> list[ScanFiles]:
    manifest = root / "dataset.json"
    pairs: list[tuple[Path, Path | None]] = []
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text()).get("training", [])
        except (json.JSONDecodeError, AttributeError) as error:
            raise MedzooDataError(manifest, f"invalid JSON ({error})", "an MSD dataset.json") from None
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise MedzooDataError(f"{manifest}: training[{i}]", repr(entry), "{image: path, label: path}")
            label = entry.get("label")
            pairs.append(((root / entry["image"]).resolve(), (root / label).resolve() if label else None))
    elif (root / "imagesTr").is_dir():
        for image in sorted((root / "imagesTr").glob("*.nii*")):
            name = _stem(image).removesuffix("_0000") + image.name[len(_stem(image)) :]
            label = root / "labelsTr" / name
            pairs.append((image, label if label.is_file() else None))
    return [ScanFiles(_stem(image).removesuffix("_0000"), image, label) for image, label in pairs]


def _btcv_layout(root: Path, superpixel_scale: str = "MIDDLE") -> list[ScanFiles]:
    scans = []
    for image in sorted((root / "img").glob("img*.nii*")):
        scan_id = _stem(image)[len("img") :]
        label = next(iter(sorted((root / "label").glob(f"label{scan_id}.nii*"))), None)
        scans.append(ScanFiles(scan_id, image, label))
    return scans


LAYOUTS: dict[str, Callable[..., list[ScanFiles]]] = {
    "alpnet": _alpnet_layout,
    "msd": _msd_layout,
    "btcv": _btcv_layout,
}


def find_scans(
    root: str | Path, layout: str = "auto", need_labels: bool = False, superpixel_scale: str = "MIDDLE"
) -> list[ScanFiles]:
    """The scans under ``root`` in ``layout`` (``auto``: the first layout that finds any), sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise MedzooDataError(
            root, "no such folder", f"a dataset folder in one of the layouts {list(LAYOUTS)}"
        )
    if layout != "auto" and layout not in LAYOUTS:
        raise MedzooDataError("data.layout", repr(layout), f"'auto' or one of {list(LAYOUTS)}")
    names = list(LAYOUTS) if layout == "auto" else [layout]
    for name in names:
        scans = LAYOUTS[name](root, superpixel_scale)
        if scans:
            break
    else:
        raise MedzooDataError(
            root, "no scans", f"files in the layout(s) {names} (see the README's Real data)"
        )
    if need_labels:
        missing = [s.image for s in scans if s.label is None]
        if missing:
            raise MedzooDataError(
                root, f"{len(missing)} images without labels (first {missing[0]})", "a label per image"
            )
    return sorted(scans, key=_natural_key)


def preprocess_intensity(volume: np.ndarray, modality: Literal["ct", "mr"]) -> np.ndarray:
    """CT: clip to [-125, 275] HU; MR: clip at the 99.5th percentile; then min-max to [0, 1] (float32)."""
    volume = np.asarray(volume, dtype=np.float32)
    if modality == "ct":
        volume = np.clip(volume, *CT_WINDOW)
        lo, hi = CT_WINDOW
    elif modality == "mr":
        lo, hi = float(volume.min()), float(np.percentile(volume, 99.5))
        volume = np.clip(volume, lo, hi)
    else:
        raise MedzooDataError("data.modality", repr(modality), "'ct' or 'mr'")
    if hi <= lo:
        return np.zeros_like(volume)
    return (volume - lo) / (hi - lo)


def body_mask(image: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """The body foreground of a slice (H, W) in [0, 1]: > threshold, holes filled, largest component."""
    mask = ndimage.binary_fill_holes(image > threshold)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def slice_superpixels(
    image: np.ndarray, min_size: int = 400, sigma: float = 1.0, scale: float = 1.0, threshold: float = 1e-3
) -> np.ndarray:
    """Felzenszwalb superpixels of a slice (H, W) in [0, 1] masked by the body: int32, 0 outside, 1..n."""
    fg = body_mask(image, threshold)
    if not fg.any():
        return np.zeros(image.shape, dtype=np.int32)
    segments = felzenszwalb(image.astype(np.float64), scale=scale, sigma=sigma, min_size=min_size) + 1
    segments[~fg] = 0
    _, relabelled = np.unique(segments, return_inverse=True)  # 0 stays 0 (the smallest value)
    return relabelled.reshape(image.shape).astype(np.int32)


@dataclass
class Scan:
    """A preprocessed scan: ``image`` (Z, H, W) float32 in [0, 1]; ``label`` (Z, H, W) int64 or None;
    ``superpixels`` (Z, H, W) int32 or None; the source geometry to write predictions back."""

    scan_id: str
    image: np.ndarray
    label: np.ndarray | None
    superpixels: np.ndarray | None
    source_shape: tuple[int, int, int]
    affine: np.ndarray
    path: Path


def _resize_slices(volume: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(X, Y, Z) -> (Z, size, size)."""
    tensor = torch.as_tensor(np.ascontiguousarray(np.moveaxis(volume, -1, 0)), dtype=torch.float32)[:, None]
    if mode == "nearest":
        out = F.interpolate(tensor, size=(size, size), mode="nearest")
    else:
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def load_scan(
    files: ScanFiles,
    modality: Literal["ct", "mr"],
    image_size: int,
    superpixel_kwargs: dict[str, Any] | None = None,
) -> Scan:
    """Read, window and resize a scan; superpixels read from ``files.superpixels`` or computed.

    ``superpixel_kwargs`` (for :func:`slice_superpixels`): None = no superpixels unless a file exists.

    Raises:
        MedzooDataError: a non-3D volume, a label of another shape, or a volume without body foreground.
    """
    volume = read_volume(files.image)
    if volume.array.ndim != 3 or min(volume.array.shape) < 1:
        raise MedzooDataError(files.image, f"shape {volume.array.shape}", "a 3D volume")
    image = _resize_slices(preprocess_intensity(volume.array, modality), image_size, "bilinear").clip(0, 1)
    if not (image > 1e-3).any():
        raise MedzooDataError(
            files.image,
            "a volume with no foreground (every voxel at the window minimum)",
            f"a {modality.upper()} scan with a body (CT in HU, window {CT_WINDOW})",
        )
    label = None
    if files.label is not None:
        raw = read_volume(files.label).array
        if raw.shape != volume.array.shape:
            raise MedzooDataError(
                files.label, f"shape {raw.shape}", f"the image's shape {volume.array.shape}"
            )
        label = _resize_slices(np.rint(raw), image_size, "nearest").astype(np.int64)
    superpixels = None
    if files.superpixels is not None:
        raw = read_volume(files.superpixels).array
        superpixels = _resize_slices(np.rint(raw), image_size, "nearest").astype(np.int32)
    elif superpixel_kwargs is not None:
        superpixels = np.stack([slice_superpixels(s, **superpixel_kwargs) for s in image])
    return Scan(
        files.scan_id, image, label, superpixels, tuple(volume.array.shape), volume.affine, files.image
    )


def cv_folds(n_scans: int, n_folds: int = 5, fold: int = 0) -> tuple[list[int], list[int], int]:
    """The reference's cross-validation split: (train indices, evaluation indices, support index).

    Scans (sorted by id) are cut into ``n_folds`` contiguous folds; fold ``k`` plus the next scan is held out,
    the extra scan (the first scan when ``k`` is the last fold) being the support of the one-shot test.
    """
    if not 0 <= fold < n_folds or n_scans < n_folds + 1:
        raise MedzooDataError(
            "data.fold",
            f"fold {fold} of {n_folds} with {n_scans} scans",
            "0 <= fold < n_folds and at least n_folds + 1 scans",
        )
    bounds = np.linspace(0, n_scans, n_folds + 1).round().astype(int)
    held = list(range(bounds[fold], bounds[fold + 1]))
    support = bounds[fold + 1] % n_scans
    held_out = {*held, support}
    return [i for i in range(n_scans) if i not in held_out], held, support


def training_slices(
    scans: Sequence[Scan], exclude_classes: Sequence[int] = (), min_pixels: int = 1
) -> list[tuple[int, int]]:
    """(scan, z) of every slice with a superpixel of >= ``min_pixels`` pixels, minus (setting 2) every slice
    whose label contains any of ``exclude_classes`` (a scan without a label cannot be screened: error)."""
    pool = []
    for s, scan in enumerate(scans):
        if scan.superpixels is None:
            raise MedzooDataError(scan.path, "no superpixels", "superpixels (computed or superpix-*.nii.gz)")
        if exclude_classes and scan.label is None:
            raise MedzooDataError(scan.path, "no label", "labels to remove test-class slices (setting 2)")
        for z in range(len(scan.image)):
            if exclude_classes and np.isin(scan.label[z], list(exclude_classes)).any():
                continue
            counts = np.bincount(scan.superpixels[z].ravel())
            if len(counts) > 1 and counts[1:].max() >= min_pixels:
                pool.append((s, z))
    return pool


class EpisodeDataset(Dataset):
    """Self-supervised episodes: one superpixel of one slice is the class; support and query are two
    independent augmentations (theta) of that slice and its superpixel mask.

    Item ``i`` of epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i])`` (the epoch is read from
    ``epoch_source.epoch``, the train sampler). Items: ``support_image``/``query_image`` (1, H, W) float,
    ``support_mask``/``query_mask`` (H, W) int64 in {0, 1}.
    """

    def __init__(
        self,
        scans: Sequence[Scan],
        params: AugmentationParams,
        length: int = 1000,
        exclude_classes: Sequence[int] = (),
        seed: int = 0,
        min_superpixel_pixels: int = 1,
    ) -> None:
        self.scans, self.params, self.length, self.seed = list(scans), params, int(length), int(seed)
        self.min_pixels = min_superpixel_pixels
        self.pool = training_slices(self.scans, exclude_classes, min_superpixel_pixels)
        if not self.pool:
            raise MedzooDataError("training scans", "no slice with a superpixel left", "slices to train on")
        self.epoch_source: Any = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch = int(getattr(self.epoch_source, "epoch", 0))
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        s, z = self.pool[int(rng.integers(len(self.pool)))]
        scan = self.scans[s]
        ids, counts = np.unique(scan.superpixels[z], return_counts=True)
        ids = ids[(ids > 0) & (counts >= self.min_pixels)]
        mask = torch.as_tensor(scan.superpixels[z] == rng.choice(ids), dtype=torch.int64)
        image = torch.as_tensor(scan.image[z])[None]
        support_image, support_mask = augment(image, mask, self.params, rng)
        query_image, query_mask = augment(image, mask, self.params, rng)
        return {
            "support_image": support_image,
            "support_mask": support_mask,
            "query_image": query_image,
            "query_mask": query_mask,
            "scan": s,
            "z": z,
        }


def organ_z_range(label: np.ndarray, cls: int, where: str | Path = "label") -> tuple[int, int]:
    """First and last slice (inclusive) of ``label`` (Z, H, W) containing class ``cls``."""
    zs = np.flatnonzero((label == cls).reshape(len(label), -1).any(axis=1))
    if len(zs) == 0:
        raise MedzooDataError(where, f"no voxel of class {cls}", f"a mask containing class {cls}")
    return int(zs[0]), int(zs[-1])


def support_slice_indices(z_min: int, z_max: int, n_parts: int = 3) -> list[int]:
    """Support slices at (2i + 1) / (2 n_parts) of the organ's z-range (1/6, 1/2, 5/6 for 3), floored."""
    return [int(z_min + (2 * i + 1) / (2 * n_parts) * (z_max - z_min)) for i in range(n_parts)]


def chunk_assignment(n_slices: int, n_parts: int = 3) -> np.ndarray:
    """Chunk of each of the ``n_slices`` query slices in the organ range: floor(k n_parts / n_slices)."""
    return (np.arange(n_slices) * n_parts // max(n_slices, 1)).astype(np.int64)


class OneShotDataset(Dataset):
    """The 1-way 1-shot test: one item per (query scan, class).

    The support scan's slices at 1/6, 1/2, 5/6 of the class's z-range (``n_parts`` = 3) are the shots; the
    query's z-range of that class (from its label, as in the reference evaluation) is cut into ``n_parts``
    chunks, chunk ``i`` segmented with shot ``i``; slices outside the range are background.

    Items: ``support_images`` (P, 1, H, W), ``support_masks`` (P, H, W), ``query_images`` (R, 1, H, W)
    for the R slices of the range, ``chunks`` (R,), ``z_range`` (2,), ``query_label`` (Z, H, W) binary,
    ``class_id``,
    ``index``.
    """

    def __init__(
        self, support: Scan, queries: Sequence[Scan], classes: Sequence[int], n_parts: int = 3
    ) -> None:
        if support.label is None:
            raise MedzooDataError(support.path, "no label", "a labelled support scan")
        self.support, self.queries, self.classes, self.n_parts = (
            support,
            list(queries),
            list(classes),
            n_parts,
        )
        self.items = [(q, c) for q in range(len(self.queries)) for c in self.classes]
        for c in self.classes:
            organ_z_range(support.label, c, support.path)  # a support without the class is an error up front
        self.shots = {
            c: support_slice_indices(*organ_z_range(support.label, c, support.path), n_parts) for c in classes
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        q, cls = self.items[index]
        query = self.queries[q]
        if query.label is None:
            raise MedzooDataError(query.path, "no label", "a labelled query scan for evaluation")
        z0, z1 = organ_z_range(query.label, cls, query.path)
        shots = self.shots[cls]
        return {
            "support_images": torch.as_tensor(self.support.image[shots])[:, None],
            "support_masks": torch.as_tensor(self.support.label[shots] == cls, dtype=torch.int64),
            "query_images": torch.as_tensor(query.image[z0 : z1 + 1])[:, None],
            "chunks": torch.as_tensor(chunk_assignment(z1 - z0 + 1, self.n_parts)),
            "z_range": torch.tensor([z0, z1]),
            "query_label": torch.as_tensor(query.label == cls, dtype=torch.int64),
            "class_id": cls,
            "query_id": query.scan_id,
            "index": index,
        }


class PredictDataset(Dataset):
    """``predict``: one item per query volume; the support's class z-range is mapped to the query by relative
    position (no query label exists), then cut into ``n_parts`` chunks as in the test."""

    def __init__(self, support: Scan, queries: Sequence[Scan], cls: int, n_parts: int = 3) -> None:
        if support.label is None:
            raise MedzooDataError(support.path, "no label", "--data.support_label with the class")
        self.support, self.queries, self.cls, self.n_parts = support, list(queries), cls, n_parts
        self.range = organ_z_range(support.label, cls, f"support mask for class {cls}")
        self.shots = support_slice_indices(*self.range, n_parts)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        query = self.queries[index]
        n_support, n_query = len(self.support.image), len(query.image)
        z0 = int(np.floor(self.range[0] / n_support * n_query))
        z1 = min(n_query - 1, max(z0, int(np.ceil((self.range[1] + 1) / n_support * n_query)) - 1))
        return {
            "support_images": torch.as_tensor(self.support.image[self.shots])[:, None],
            "support_masks": torch.as_tensor(self.support.label[self.shots] == self.cls, dtype=torch.int64),
            "query_images": torch.as_tensor(query.image[z0 : z1 + 1])[:, None],
            "chunks": torch.as_tensor(chunk_assignment(z1 - z0 + 1, self.n_parts)),
            "z_range": torch.tensor([z0, z1]),
            "n_slices": n_query,
            "source_shape": torch.tensor(query.source_shape),
            "affine": torch.as_tensor(query.affine),
            "path": str(query.path),
            "class_id": self.cls,
            "index": index,
        }


def search_groups(
    scans: Sequence[Scan], n_bins: int = 8, crop_size: int = 64, threshold: float = 1e-3
) -> list[list[np.ndarray]]:
    """Pseudo-classes for the search, without labels: body crops at the same relative axial position.

    For each scan, the slices with body foreground are cut into ``n_bins`` equal bins of relative position;
    the middle slice of each bin is cropped to its body's bounding box and resized to ``crop_size``. Group
    ``b`` holds bin ``b`` of every scan: (crop_size, crop_size) float arrays in [0, 1].
    """
    groups: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    for scan in scans:
        zs = [z for z in range(len(scan.image)) if body_mask(scan.image[z], threshold).sum() >= 16]
        if len(zs) < n_bins:
            continue
        for b in range(n_bins):
            part = zs[len(zs) * b // n_bins : len(zs) * (b + 1) // n_bins]
            z = part[len(part) // 2]
            rows, cols = np.nonzero(body_mask(scan.image[z], threshold))
            crop = scan.image[z, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            resized = F.interpolate(
                torch.as_tensor(crop)[None, None], size=(crop_size, crop_size), mode="bilinear"
            )
            groups[b].append(resized[0, 0].clamp(0, 1).numpy())
    return [g for g in groups if len(g) >= 2]


def _collate_one(items: list[dict[str, Any]]) -> dict[str, Any]:
    (item,) = items
    return item


def make_demo_dataset(root: Path, n_volumes: int = 8, seed: int = 0) -> Path:
    """Generate (once) the demo's synthetic CT set (MSD layout, 64^3 voxels of 1.5 mm, 4 organs)."""
    from medzoo.synthetic import make_ct_dataset

    if not (root / "dataset.json").is_file():
        make_ct_dataset(
            root, n_volumes=n_volumes, shape=(64, 64, 64), spacing=(1.5, 1.5, 1.5), num_organs=4, seed=seed
        )
    return root


class FewShotDataModule(MedzooDataModule):
    """Scans, superpixel episodes (train) and the one-shot 3-chunk protocol (val/test = the held-out fold).

    Args:
        root: dataset folder (see the module docstring); None: a synthetic CT set generated into
            ``$MEDZOO_CACHE/fewshot-augsearch``.
        layout: ``auto`` or one of :data:`LAYOUTS`.
        modality: ``ct`` (window [-125, 275] HU) or ``mr`` (99.5th-percentile clip).
        image_size: slices are resized to (image_size, image_size) (256 in the paper).
        test_classes: label ids of the organs evaluated one-shot.
        setting: 1 (test organs may appear unlabelled in training slices) or 2 (every training slice
            containing a test class is removed).
        fold, n_folds: cross-validation fold (reference split, :func:`cv_folds`).
        n_parts: support chunks (3).
        augmentation: a theta YAML (``fewshot-augsearch search`` output); None: the paper's default.
        episodes_per_epoch: episodes drawn per training epoch (the reference reloads every 1000 iterations).
        superpixel_min_size, superpixel_sigma, superpixel_scale: felzenszwalb settings (paper: 400, 1,
            1) for scans without ``superpix-*`` files.
        superpixel_file_scale: the ``superpix-<SCALE>_`` files of the alpnet layout (``MIDDLE``).
        min_superpixel_pixels: a superpixel smaller than this is never drawn as a pseudo-label.
        support_image, support_label, predict_class: ``predict``: the support volume, its mask and the class.
        synthetic_volumes: generated scans when ``root`` is None.
    """

    def __init__(
        self,
        root: str | None = None,
        layout: str = "auto",
        modality: Literal["ct", "mr"] = "ct",
        image_size: int = 256,
        test_classes: list[int] | None = None,
        setting: int = 1,
        fold: int = 0,
        n_folds: int = 5,
        n_parts: int = 3,
        augmentation: str | None = None,
        episodes_per_epoch: int = 1000,
        superpixel_min_size: int = 400,
        superpixel_sigma: float = 1.0,
        superpixel_scale: float = 1.0,
        superpixel_file_scale: str = "MIDDLE",
        min_superpixel_pixels: int = 1,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | None = None,
        support_image: str | None = None,
        support_label: str | None = None,
        predict_class: int | None = None,
        cache_dir: str | None = None,
        synthetic_volumes: int = 8,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        if setting not in (1, 2):
            raise MedzooDataError("data.setting", repr(setting), "1 or 2")
        if modality not in ("ct", "mr"):
            raise MedzooDataError("data.modality", repr(modality), "'ct' or 'mr'")
        self.layout, self.modality, self.image_size = layout, modality, int(image_size)
        self.test_classes = list(test_classes) if test_classes else [1, 2, 3, 4]
        self.setting, self.fold, self.n_folds, self.n_parts = setting, fold, n_folds, n_parts
        self.augmentation_path = augmentation
        self.params = load_params(augmentation) if augmentation else AugmentationParams()
        self.episodes_per_epoch = episodes_per_epoch
        self.superpixel_kwargs = {
            "min_size": superpixel_min_size,
            "sigma": superpixel_sigma,
            "scale": superpixel_scale,
        }
        self.superpixel_file_scale, self.min_superpixel_pixels = superpixel_file_scale, min_superpixel_pixels
        self.support_image, self.support_label, self.predict_class = (
            support_image,
            support_label,
            predict_class,
        )
        self.synthetic_volumes = synthetic_volumes
        self._scans: list[Scan] | None = None

    @property
    def exclude_classes(self) -> list[int]:
        """Setting 2 removes the test classes from training; setting 1 removes nothing."""
        return self.test_classes if self.setting == 2 else []

    def dataset_root(self) -> Path:
        if self.root is not None:
            return self.root
        return make_demo_dataset(
            self.demo_dir() / f"synthetic-ct-{self.synthetic_volumes}", self.synthetic_volumes
        )

    def prepare_data(self) -> None:
        self.dataset_root()

    def scan_files(self) -> list[ScanFiles]:
        return find_scans(
            self.dataset_root(), self.layout, need_labels=True, superpixel_scale=self.superpixel_file_scale
        )

    def load(self, files: ScanFiles, superpixels: bool = True) -> Scan:
        return load_scan(
            files, self.modality, self.image_size, self.superpixel_kwargs if superpixels else None
        )

    def scans(self) -> list[Scan]:
        if self._scans is None:
            self._scans = [self.load(f) for f in self.scan_files()]
        return self._scans

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            return
        scans = self.scans()
        train, held, support = cv_folds(len(scans), self.n_folds, self.fold)
        self.train_scans = [scans[i] for i in train]
        self.support_scan, self.eval_scans = scans[support], [scans[i] for i in held]

    def train_dataloader(self):
        dataset = EpisodeDataset(
            self.train_scans,
            self.params,
            self.episodes_per_epoch,
            self.exclude_classes,
            self.seed,
            self.min_superpixel_pixels,
        )
        loader = self.train_loader(dataset)
        dataset.epoch_source = loader.sampler  # Lightning sets the sampler's epoch before each epoch
        return loader

    def _eval(self):
        dataset = OneShotDataset(self.support_scan, self.eval_scans, self.test_classes, self.n_parts)
        return self.eval_loader(dataset, batch_size=1, collate_fn=_collate_one)

    def val_dataloader(self):
        return self._eval()

    def test_dataloader(self):
        return self._eval()

    def predict_dataloader(self):
        if not (self.support_image and self.support_label and self.predict_class is not None):
            raise MedzooDataError(
                "predict",
                f"support_image={self.support_image}, support_label={self.support_label}, "
                f"predict_class={self.predict_class}",
                "--data.support_image, --data.support_label and --data.predict_class",
            )
        support = self.load(ScanFiles("support", Path(self.support_image), Path(self.support_label)), False)
        queries = [self.load(ScanFiles(_stem(p), p), False) for p in self.predict_files(NIFTI)]
        dataset = PredictDataset(support, queries, int(self.predict_class), self.n_parts)
        return self.eval_loader(dataset, batch_size=1, collate_fn=_collate_one)
