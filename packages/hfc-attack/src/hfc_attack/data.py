"""Binary classification data: APTOS 2019, Kaggle pneumonia CXR, a folder of class folders, or a CSV; and
3D volumes (NIfTI) in a folder of class folders or a CSV.

Every layout yields ``(path, label, split)`` records; splits the dataset does not ship come from
``medzoo.lightning.seeded_split``. Images are read with ``medzoo.io.read_image``, scaled to [0, 1] by their
dtype's range, resized to ``image_size`` and given ``channels`` channels (grey is repeated). Volumes are read
with ``medzoo.io.read_volume`` (reoriented to RAS), windowed to [0, 1] and resampled to the cube
``image_size`` = (D, H, W) (slices along S, then A, then R).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medzoo.errors import MedzooDataError
from medzoo.io import IMAGE_SUFFIXES, list_images, read_image, read_volume, write_csv, write_png, write_volume
from medzoo.lightning import MedzooDataModule, seeded_split

__all__ = [
    "LAYOUTS",
    "VOLUME_LAYOUTS",
    "ClassificationDataModule",
    "ImageClassificationDataset",
    "Record",
    "VolumeClassificationDataset",
    "load_image",
    "load_volume",
    "make_demo_set",
    "make_volume_demo_set",
]

SPLITS = ("train", "val", "test")
VOLUME_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Record:
    """One image: its file, class index (-1 when unknown) and split."""

    path: Path
    label: int
    split: str


def load_image(path: str | Path, size: Sequence[int], channels: int) -> torch.Tensor:
    """(channels, H, W) float32 in [0, 1]: the file scaled by its dtype's range and resized (antialiased)."""
    array = read_image(path).array
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    else:  # float (DICOM with rescale): min-max to [0, 1]
        array = array.astype(np.float32)
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-8)
    image = torch.from_numpy(np.ascontiguousarray(array))
    image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)[:3]
    if image.shape[0] != channels:
        image = image.mean(0, keepdim=True).expand(channels, -1, -1) if channels in (1, 3) else image
    if image.shape[0] != channels:
        raise MedzooDataError(path, f"{image.shape[0]} channels", f"{channels} channels (grey or RGB)")
    image = F.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return image[0].clamp(0, 1).contiguous()


class ImageClassificationDataset(Dataset):
    """Samples ``{"image": (C, H, W) in [0, 1], "label": int, "index": int, "name": str}``."""

    def __init__(
        self, records: Sequence[Record], image_size: Sequence[int], channels: int, root: Path | None = None
    ):
        self.records = list(records)
        self.image_size = tuple(image_size)
        self.channels = channels
        self.root = root

    def __len__(self) -> int:
        return len(self.records)

    def name(self, i: int) -> str:
        path = self.records[i].path
        if self.root is not None and path.is_relative_to(self.root):
            return str(path.relative_to(self.root))
        return path.name

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        image = load_image(record.path, self.image_size, self.channels)
        return {"image": image, "label": record.label, "index": i, "name": self.name(i)}


def load_volume(path: str | Path, size: Sequence[int], window: Sequence[float] | None) -> torch.Tensor:
    """(1, D, H, W) float32 in [0, 1]: a NIfTI volume reoriented to RAS, windowed and resampled to ``size``.

    ``window = (low, high)`` maps ``low`` to 0 and ``high`` to 1 and clips (e.g. HU for CT); ``None`` scales
    each volume's own min..max to [0, 1]. The (X, Y, Z) array becomes (D, H, W) = (Z, Y, X); resampling is
    area averaging when every axis shrinks, else trilinear.
    """
    volume = read_volume(path, reorient_to_ras=True)  # MedzooDataError for missing/corrupt/NaN files
    array = volume.array
    if array.ndim != 3 or min(array.shape) < 2:
        raise MedzooDataError(
            path, f"an array of shape {array.shape}", "a 3D volume (X, Y, Z), >= 2 voxels each"
        )
    if window is None:
        low, high = float(array.min()), float(array.max())
    else:
        low, high = (float(w) for w in window)
    scaled = (array.astype(np.float32) - low) / max(high - low, 1e-8)
    tensor = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 1, 0)))[None, None].clamp(0, 1)
    size = tuple(int(s) for s in size)
    if all(t <= n for t, n in zip(size, tensor.shape[2:], strict=True)):
        tensor = F.interpolate(tensor, size=size, mode="area")
    else:
        tensor = F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)
    return tensor[0].clamp(0, 1).contiguous()


class VolumeClassificationDataset(ImageClassificationDataset):
    """Samples ``{"image": (1, D, H, W) in [0, 1], "label": int, "index": int, "name": str}`` (NIfTI files).

    ``image_size`` is the cube (D, H, W); ``window`` as in :func:`load_volume`.
    """

    def __init__(
        self,
        records: Sequence[Record],
        image_size: Sequence[int],
        window: Sequence[float] | None,
        root: Path | None = None,
    ):
        super().__init__(records, image_size, 1, root)
        self.window = None if window is None else tuple(float(w) for w in window)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        image = load_volume(record.path, self.image_size, self.window)
        return {"image": image, "label": record.label, "index": i, "name": self.name(i)}


# ---- layouts --------------------------------------------------------------------------------------------


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise MedzooDataError(path, "nothing there", what)
    return path


def _assign_splits(records: list[tuple[Path, int]], fractions: Sequence[float], seed: int) -> list[Record]:
    parts = seeded_split(len(records), fractions, seed)
    out: list[Record] = []
    for split, idx in zip(SPLITS, parts, strict=True):
        out += [Record(records[i][0], records[i][1], split) for i in sorted(idx)]
    return out


def pneumonia_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """Kaggle "Chest X-Ray Images (Pneumonia)": ``[chest_xray/]{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

    NORMAL = 0, PNEUMONIA = 1; the official folders are the splits.
    """
    base = root / "chest_xray" if (root / "chest_xray").is_dir() else root
    records = []
    for split, folder in (("train", "train"), ("val", "val"), ("test", "test")):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            d = _need(base / folder / cls, f"the Kaggle pneumonia folder {folder}/{cls}/")
            records += [Record(p, label, split) for p in list_images(d)]
    return records


def aptos_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """APTOS 2019: ``train.csv`` (id_code, diagnosis 0-4), ``train_images/<id_code>.png``; label: grade > 0.

    Only the official training set has grades: it is split train/val/test with ``fractions``.
    """
    table_path = _need(root / "train.csv", "APTOS 2019 train.csv (id_code, diagnosis)")
    table = pd.read_csv(table_path)
    missing = {"id_code", "diagnosis"} - set(table.columns)
    if missing:
        raise MedzooDataError(table_path, f"columns {list(table.columns)}", "id_code and diagnosis columns")
    grades = pd.to_numeric(table["diagnosis"], errors="coerce")
    if grades.isna().any() or not grades.between(0, 4).all():
        raise MedzooDataError(f"{table_path} (diagnosis)", "values outside 0-4", "DR grades 0, 1, 2, 3, 4")
    items = [
        (root / "train_images" / f"{code}.png", int(g > 0))
        for code, g in zip(table["id_code"], grades, strict=True)
    ]
    return _assign_splits(items, fractions, seed)


def folder_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """``root/<class name>/*`` with class indices in sorted-name order, split with ``fractions``."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if len(classes) < 2:
        raise MedzooDataError(root, f"class folders {classes}", "at least two class folders of images")
    items = [(p, i) for i, cls in enumerate(classes) for p in list_images(root / cls)]
    return _assign_splits(items, fractions, seed)


def _csv_records(
    root: Path, column: str, fractions: Sequence[float], seed: int, suffixes: Sequence[str] | None = None
) -> list[Record]:
    path = _need(root / "labels.csv", f"labels.csv with {column}, label[, split] columns")
    table = pd.read_csv(path)
    if not {column, "label"} <= set(table.columns):
        raise MedzooDataError(path, f"columns {list(table.columns)}", f"{column} and label columns")
    labels = pd.to_numeric(table["label"], errors="coerce")
    if labels.isna().any() or not (labels == labels.round()).all() or (labels < 0).any():
        bad = table["label"][labels.isna() | (labels != labels.round()) | (labels < 0)].tolist()[:3]
        raise MedzooDataError(f"{path} (label)", f"values {bad}", "non-negative integer class indices")
    items = [(root / str(p), int(y)) for p, y in zip(table[column], labels, strict=True)]
    if suffixes is not None:
        wrong = [str(p) for p, _ in items if not p.name.lower().endswith(tuple(suffixes))]
        if wrong:
            raise MedzooDataError(
                f"{path} ({column})", f"paths {wrong[:3]}", f"files ending in {', '.join(suffixes)}"
            )
    if "split" not in table:
        return _assign_splits(items, fractions, seed)
    splits = table["split"].astype(str).str.lower().replace({"validate": "val"})
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise MedzooDataError(f"{path} (split)", f"values {bad}", "train, val/validate, test")
    return [Record(p, y, s) for (p, y), s in zip(items, splits, strict=True)]


def csv_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """``root/labels.csv`` with ``image`` (path relative to root), ``label`` (int) and optional ``split``."""
    return _csv_records(root, "image", fractions, seed)


def _list_volumes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))


def volume_folder_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """``root/<class name>/*.nii[.gz]`` (3D volumes), class indices in sorted-name order, split with
    ``fractions``."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if len(classes) < 2:
        raise MedzooDataError(
            root, f"class folders {classes}", "at least two class folders of .nii/.nii.gz volumes"
        )
    empty = [c for c in classes if not _list_volumes(root / c)]
    if empty:
        raise MedzooDataError(
            root, f"class folders without volumes {empty}", "NIfTI volumes in every class folder"
        )
    items = [(p, i) for i, cls in enumerate(classes) for p in _list_volumes(root / cls)]
    return _assign_splits(items, fractions, seed)


def volume_csv_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """``root/labels.csv`` with ``path`` (a .nii/.nii.gz volume, relative to root), ``label`` (int) and
    optional ``split``."""
    return _csv_records(root, "path", fractions, seed, VOLUME_SUFFIXES)


# name -> loader(root, fractions, seed) -> records
LAYOUTS: dict[str, Callable[[Path, Sequence[float], int], list[Record]]] = {
    "pneumonia": pneumonia_layout,
    "aptos": aptos_layout,
    "folder": folder_layout,
    "csv": csv_layout,
    "volume_folder": volume_folder_layout,
    "volume_csv": volume_csv_layout,
}
# The layouts whose samples are 3D volumes (1, D, H, W) rather than images (C, H, W).
VOLUME_LAYOUTS = frozenset({"volume_folder", "volume_csv"})


def make_demo_set(root: Path, n_images: int = 160, size: int = 64, seed: int = 0) -> Path:
    """Write a two-class synthetic CXR set (medzoo.synthetic) in the Kaggle pneumonia layout.

    Half the chests show "Pneumonia"; splits 70/10/20 per class. Returns ``root``.
    """
    from medzoo.synthetic import render_cxr

    seeds = np.random.SeedSequence(seed).spawn(n_images)
    for i in range(n_images):
        label = i % 2
        split = "train" if (i // 2) % 10 < 7 else "val" if (i // 2) % 10 < 8 else "test"
        rng = np.random.default_rng(seeds[i])
        image = render_cxr(rng, ["Pneumonia"] if label else [], (size, size), classes=("Pneumonia",))
        cls = "PNEUMONIA" if label else "NORMAL"
        write_png(root / "chest_xray" / split / cls / f"synthetic_{i:05d}.png", image)
    return root


def make_volume_demo_set(root: Path, n_volumes: int = 48, size: int = 32, seed: int = 0) -> Path:
    """Write a two-class synthetic CT set: ``root/{healthy,lesion}/synthetic_*.nii.gz`` and ``labels.csv``.

    Each volume is ``medzoo.synthetic.render_ct_volume`` (int16 HU, ``size``^3 voxels of 1.5 mm); odd-numbered
    ones (label 1, "lesion") get a bright spherical lesion (~450 HU, radius ``size / 8`` voxels) in the soft
    tissue at a random place. Both the class-folder and the CSV (``path,label``) layouts read it. Returns
    ``root``.
    """
    from medzoo.synthetic.ct import ras_affine, render_ct_volume

    shape = (size, size, size)
    affine = ras_affine(shape, (1.5, 1.5, 1.5))
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1)
    rows = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_volumes)):
        rng = np.random.default_rng(child)
        hu, organs = render_ct_volume(rng, shape, num_organs=2)
        label = i % 2
        if label:
            tissue = np.argwhere((organs == 0) & (hu > -60) & (hu < 120))
            centre = tissue[rng.integers(len(tissue))]
            radius = max(size / 8, 1.5)
            inside = ((grid - centre) ** 2).sum(-1) <= radius**2
            hu = hu.copy()
            hu[inside] = np.round(450 + 8 * rng.standard_normal(int(inside.sum()))).astype(np.int16)
        name = f"{'lesion' if label else 'healthy'}/synthetic_{i:05d}.nii.gz"
        write_volume(root / name, hu, affine)
        rows.append({"path": name, "label": label})
    write_csv(root / "labels.csv", pd.DataFrame(rows))
    return root


class ClassificationDataModule(MedzooDataModule):
    """Images and binary labels for the classifier, the GMMs, the attacks and the detectors.

    Args:
        root: dataset folder; None = the synthetic demo set under ``demo_dir()`` (the pneumonia layout; for
            the volume layouts, :func:`make_volume_demo_set`).
        layout: one of :data:`LAYOUTS` (pneumonia, aptos, folder, csv, volume_folder, volume_csv).
        image_size: (H, W) after resizing; (D, H, W) for the volume layouts.
        channels: image channels fed to the model (grey is repeated to 3 for ImageNet-style models); 1 for
            volumes.
        window: volumes only: intensities (low, high) mapped to [0, 1] and clipped (HU for CT); None = each
            volume's min..max.
        split_fractions: train/val/test fractions where the layout has no official split.
        demo_images, demo_size: the synthetic set's size: images and their edge, or volumes and the cube
            edge (only when ``root`` is None).
        batch_size, num_workers, seed, predict_root, cache_dir: see ``MedzooDataModule``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        layout: str = "pneumonia",
        image_size: Sequence[int] = (224, 224),
        channels: int = 3,
        window: Sequence[float] | None = (-1000.0, 1000.0),
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        demo_images: int = 160,
        demo_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        # Stored in checkpoints so that the attack verbs rebuild the same data from `--ckpt_path` alone.
        self.save_hyperparameters()
        if layout not in LAYOUTS:
            raise MedzooDataError("data.layout", repr(layout), f"one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.volumes = layout in VOLUME_LAYOUTS
        self.image_size = tuple(int(s) for s in image_size)
        dims = 3 if self.volumes else 2
        if len(self.image_size) != dims or min(self.image_size) < 1:
            raise MedzooDataError(
                "data.image_size", f"{list(image_size)} for layout {layout!r}", f"{dims} positive sizes"
            )
        self.channels = int(channels)
        if self.volumes and self.channels != 1:
            raise MedzooDataError(
                "data.channels", f"{channels} for layout {layout!r}", "1 (volumes are grey)"
            )
        if window is not None and (len(window) != 2 or not float(window[0]) < float(window[1])):
            raise MedzooDataError("data.window", f"{list(window)}", "(low, high) with low < high, or null")
        self.window = None if window is None else tuple(float(w) for w in window)
        self.split_fractions = tuple(split_fractions)
        self.demo_images, self.demo_size = int(demo_images), int(demo_size)
        self.datasets: dict[str, ImageClassificationDataset] = {}

    def data_root(self) -> Path:
        """The dataset folder; for the demo, the synthetic set (generated on first use)."""
        if self.root is not None:
            return self.root
        if self.volumes:
            folder = self.demo_dir() / f"volumes-n{self.demo_images}-{self.demo_size}vox-seed{self.seed}"
            if not (folder / "labels.csv").is_file():
                make_volume_demo_set(folder, self.demo_images, self.demo_size, self.seed)
            return folder
        folder = self.demo_dir() / f"pneumonia-n{self.demo_images}-{self.demo_size}px-seed{self.seed}"
        if not (folder / "chest_xray" / "test").is_dir():
            make_demo_set(folder, self.demo_images, self.demo_size, self.seed)
        return folder

    def prepare_data(self) -> None:
        self.data_root()

    def records(self) -> list[Record]:
        return LAYOUTS[self.layout](self.data_root(), self.split_fractions, self.seed)

    def _dataset(self, records: Sequence[Record], root: Path | None) -> ImageClassificationDataset:
        if self.volumes:
            return VolumeClassificationDataset(records, self.image_size, self.window, root)
        return ImageClassificationDataset(records, self.image_size, self.channels, root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self.records()
        for split in SPLITS:
            chosen = [r for r in records if r.split == split]
            if not chosen:
                raise MedzooDataError(self.data_root(), f"no {split} images", f"images in the {split} split")
            self.datasets[split] = self._dataset(chosen, self.data_root())

    def dataset(self, split: str) -> ImageClassificationDataset:
        self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        # A last batch of one sample is dropped: BatchNorm cannot train on it where the deepest stage is one
        # voxel wide (the 3D demo's 32^3 volumes), and it carries the noisiest gradient anyway.
        dataset = self.dataset("train")
        return self.train_loader(dataset, drop_last=len(dataset) % self.batch_size == 1)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        files = self.predict_files(VOLUME_SUFFIXES if self.volumes else IMAGE_SUFFIXES)
        root = self.predict_root if self.predict_root is not None and self.predict_root.is_dir() else None
        records = [Record(p, -1, "predict") for p in files]
        return self.eval_loader(self._dataset(records, root))
