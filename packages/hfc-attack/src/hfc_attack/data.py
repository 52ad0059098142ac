"""Binary classification data: APTOS 2019, Kaggle pneumonia CXR, a folder of class folders, or a CSV.

Every layout yields ``(path, label, split)`` records; splits the dataset does not ship come from
``medzoo.lightning.seeded_split``. Images are read with ``medzoo.io.read_image``, scaled to [0, 1] by their
dtype's range, resized to ``image_size`` and given ``channels`` channels (grey is repeated).
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
from medzoo.io import IMAGE_SUFFIXES, list_images, read_image, write_png
from medzoo.lightning import MedzooDataModule, seeded_split

__all__ = [
    "LAYOUTS",
    "ClassificationDataModule",
    "ImageClassificationDataset",
    "Record",
    "load_image",
    "make_demo_set",
]

SPLITS = ("train", "val", "test")


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


def csv_layout(root: Path, fractions: Sequence[float], seed: int) -> list[Record]:
    """``root/labels.csv`` with ``image`` (path relative to root), ``label`` (int) and optional ``split``."""
    path = _need(root / "labels.csv", "labels.csv with image, label[, split] columns")
    table = pd.read_csv(path)
    if not {"image", "label"} <= set(table.columns):
        raise MedzooDataError(path, f"columns {list(table.columns)}", "image and label columns")
    items = [(root / str(p), int(y)) for p, y in zip(table["image"], table["label"], strict=True)]
    if "split" not in table:
        return _assign_splits(items, fractions, seed)
    splits = table["split"].astype(str).str.lower().replace({"validate": "val"})
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise MedzooDataError(f"{path} (split)", f"values {bad}", "train, val/validate, test")
    return [Record(p, y, s) for (p, y), s in zip(items, splits, strict=True)]


# name -> loader(root, fractions, seed) -> records
LAYOUTS: dict[str, Callable[[Path, Sequence[float], int], list[Record]]] = {
    "pneumonia": pneumonia_layout,
    "aptos": aptos_layout,
    "folder": folder_layout,
    "csv": csv_layout,
}


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


class ClassificationDataModule(MedzooDataModule):
    """Images and binary labels for the classifier, the GMMs, the attacks and the detectors.

    Args:
        root: dataset folder; None = the synthetic demo set in the pneumonia layout under ``demo_dir()``.
        layout: one of :data:`LAYOUTS` (pneumonia, aptos, folder, csv).
        image_size: (H, W) after resizing.
        channels: image channels fed to the model (grey is repeated to 3 for ImageNet-style models).
        split_fractions: train/val/test fractions where the layout has no official split.
        demo_images, demo_size: the synthetic set's size (only when ``root`` is None).
        batch_size, num_workers, seed, predict_root, cache_dir: see ``MedzooDataModule``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        layout: str = "pneumonia",
        image_size: Sequence[int] = (224, 224),
        channels: int = 3,
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
        self.image_size = tuple(int(s) for s in image_size)
        self.channels = int(channels)
        self.split_fractions = tuple(split_fractions)
        self.demo_images, self.demo_size = int(demo_images), int(demo_size)
        self.datasets: dict[str, ImageClassificationDataset] = {}

    def data_root(self) -> Path:
        """The dataset folder; for the demo, the synthetic set (generated on first use)."""
        if self.root is not None:
            return self.root
        folder = self.demo_dir() / f"pneumonia-n{self.demo_images}-{self.demo_size}px-seed{self.seed}"
        if not (folder / "chest_xray" / "test").is_dir():
            make_demo_set(folder, self.demo_images, self.demo_size, self.seed)
        return folder

    def prepare_data(self) -> None:
        self.data_root()

    def records(self) -> list[Record]:
        return LAYOUTS[self.layout](self.data_root(), self.split_fractions, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self.records()
        for split in SPLITS:
            chosen = [r for r in records if r.split == split]
            if not chosen:
                raise MedzooDataError(self.data_root(), f"no {split} images", f"images in the {split} split")
            self.datasets[split] = ImageClassificationDataset(
                chosen, self.image_size, self.channels, self.data_root()
            )

    def dataset(self, split: str) -> ImageClassificationDataset:
        self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.dataset("train"))

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        files = self.predict_files(IMAGE_SUFFIXES)
        root = self.predict_root if self.predict_root is not None and self.predict_root.is_dir() else None
        records = [Record(p, -1, "predict") for p in files]
        return self.eval_loader(ImageClassificationDataset(records, self.image_size, self.channels, root))
