"""Segmentation datasets with a sensitive attribute, and the DataModule of both stages.

Layouts (``--data.layout``, a registry of record loaders):

- ``generic`` (also the demo's and TUSC's): ``<root>/<csv>`` (default ``metadata.csv``) with columns
  ``image``, ``mask`` (paths relative to ``<root>/<image_dir>`` and ``<root>/<mask_dir>``), the attribute
  column (``--data.attribute``, e.g. ``sex``) and optionally ``split`` (``train``/``val``/``validate``/
  ``test``). Masks are PNG/TIFF/... label maps; 0/255 masks of a 2-class task are thresholded at 128.
- ``tusc``: the TUSC thyroid-ultrasound set in the same shape (``images/``, ``masks/``, ``metadata.csv``
  with ``sex`` and ``age``); ``--data.attribute age --data.attribute_bins [50]`` makes age groups.
- ``fairseg``: Harvard-FairSeg, ``<root>/*.npz`` (``slo_fundus`` or ``fundus_slo`` image, ``disc_cup_mask``
  or ``disc_cup`` with 0 background, -1 rim, -2 cup -> labels 0, 1, 2 as in the official loader) and the
  official lists ``<root>/<list_dir>/train.txt`` and ``test.txt``. Attributes as the official loader
  codes them: ``race`` (raw 2, 3, 7 -> Asian, Black, White), ``gender``, ``age`` (days; < 60 years / >=),
  ``ethnicity``, ``language``, ``maritalstatus``.

Every sample is ``{"image": (C, H, W) float in [0, 1], "mask": (H, W) int64, "group": int64,
"index": int, "name": str}`` at ``image_size``. Splits without a ``split`` column or list come from
:func:`medzoo.lightning.seeded_split` (``val_fraction``, ``test_fraction``), applied within each attribute
group (stratified), so that every split holds every group in proportion.
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
from medzoo.io import read_image
from medzoo.lightning import MedzooDataModule, seeded_split

__all__ = [
    "LAYOUTS",
    "PredictImageDataset",
    "SegmentationFairnessDataModule",
    "SegmentationRecord",
    "SensitiveSegmentationDataset",
    "load_fairseg_records",
    "load_generic_records",
    "prepare_image",
]

_SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}
_FAIRSEG_IMAGE_KEYS = ("slo_fundus", "fundus_slo")
_FAIRSEG_MASK_KEYS = ("disc_cup_mask", "disc_cup")
_FAIRSEG_RACE = {2: "Asian", 3: "Black", 7: "White"}


@dataclass(frozen=True)
class SegmentationRecord:
    """One sample on disk: image and mask paths (equal for an npz), attribute value and optional split."""

    image: Path
    mask: Path
    attribute: Any
    split: str | None = None


def _as_image(array: np.ndarray, where: Path | str, channels: int) -> np.ndarray:
    """(H, W[, C]) any dtype -> (channels, H, W) float32 in [0, 1]."""
    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 4:
        values = values[..., :3]
    if values.ndim not in (2, 3):
        raise MedzooDataError(where, f"an image of shape {values.shape}", "a 2D grey or colour image")
    if np.issubdtype(values.dtype, np.integer):
        top = 255.0 if values.max(initial=0) <= 255 else float(np.iinfo(values.dtype).max)
        values = values.astype(np.float32) / top
    else:
        values = values.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    values = values[None] if values.ndim == 2 else np.moveaxis(values, -1, 0)
    if values.shape[0] == channels:
        return values
    if channels == 1:
        return values.mean(axis=0, keepdims=True)
    if values.shape[0] == 1:
        return np.repeat(values, channels, axis=0)
    raise MedzooDataError(where, f"{values.shape[0]} channels", f"1 or {channels}")


def prepare_image(
    array: np.ndarray, size: Sequence[int], channels: int = 1, where: str = "image"
) -> torch.Tensor:
    """An image array (H, W[, C]) -> (channels, *size) float tensor in [0, 1] (bilinear, antialiased)."""
    image = torch.from_numpy(_as_image(array, where, channels))
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(
            image[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return image.clamp(0, 1)


def _as_labels(mask: np.ndarray, where: Path | str, num_classes: int) -> np.ndarray:
    """A mask array -> (H, W) int64 labels in [0, num_classes)."""
    values = np.asarray(mask)
    if values.ndim == 3:
        values = values[..., 0]
    if values.ndim != 2:
        raise MedzooDataError(where, f"a mask of shape {values.shape}", "a 2D label map")
    top = int(values.max(initial=0))
    if top >= num_classes:
        if num_classes == 2 and top > 1:
            # 0/255 (or anti-aliased) binary masks: threshold at half the range.
            return (values >= (128 if top <= 255 else top / 2)).astype(np.int64)
        raise MedzooDataError(where, f"mask labels up to {top}", f"labels in [0, {num_classes})")
    if values.min(initial=0) < 0:
        raise MedzooDataError(
            where, f"negative mask labels ({values.min()})", f"labels in [0, {num_classes})"
        )
    return values.astype(np.int64)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a metadata CSV with image, mask and attribute columns")
    return pd.read_csv(path)


def load_generic_records(
    root: Path, csv: str, attribute: str, image_dir: str, mask_dir: str, **_: Any
) -> list[SegmentationRecord]:
    """Records of the ``generic`` layout (see the module docstring)."""
    path = root / csv
    table = _read_csv(path)
    missing = [c for c in ("image", "mask", attribute) if c not in table.columns]
    if missing:
        raise MedzooDataError(path, f"columns {list(table.columns)}", f"columns image, mask and {attribute}")
    empty = table.index[table[attribute].isna()].tolist()
    if empty:
        raise MedzooDataError(
            path,
            f"no {attribute!r} value in rows {empty[:5]}",
            f"a value of the attribute {attribute!r} in every row",
        )
    records = []
    for row in table.itertuples(index=False):
        split = getattr(row, "split", None)
        split = None if split is None or pd.isna(split) else _SPLIT_NAMES.get(str(split).strip().lower())
        if "split" in table.columns and split is None:
            raise MedzooDataError(path, f"split {row.split!r}", "train, val (validate) or test")
        records.append(
            SegmentationRecord(
                root / image_dir / str(row.image),
                root / mask_dir / str(row.mask),
                getattr(row, attribute),
                split,
            )
        )
    return records


def _fairseg_attribute(data: Any, attribute: str, path: Path) -> Any:
    if attribute not in data:
        raise MedzooDataError(
            path, f"no {attribute!r} array (keys {sorted(data.keys())})", f"the attribute {attribute!r}"
        )
    value = data[attribute].item()
    if attribute == "age":
        return "<60" if value / 365 < 60 else ">=60"  # the official loader's age groups (age in days)
    if attribute == "race":
        return _FAIRSEG_RACE.get(int(value), value)
    return value


def load_fairseg_records(root: Path, attribute: str, list_dir: str, **_: Any) -> list[SegmentationRecord]:
    """Records of Harvard-FairSeg from the official ``train.txt`` / ``test.txt`` lists."""
    records = []
    for split in ("train", "test"):
        listing = root / list_dir / f"{split}.txt"
        if not listing.is_file():
            raise MedzooDataError(
                listing, "no such file", "the official FairSeg list (one npz name per line)"
            )
        for name in (line.strip() for line in listing.read_text().splitlines()):
            if not name:
                continue
            path = root / name
            if not path.is_file():
                raise MedzooDataError(path, "no such file", f"the npz named in {listing}")
            with np.load(path, allow_pickle=False) as data:
                value = _fairseg_attribute(data, attribute, path)
            records.append(SegmentationRecord(path, path, value, split))
    return records


# layout name -> record loader (registry, not an if-chain)
LAYOUTS: dict[str, Callable[..., list[SegmentationRecord]]] = {
    "generic": load_generic_records,
    "tusc": load_generic_records,
    "fairseg": load_fairseg_records,
}


def _load_pair(record: SegmentationRecord) -> tuple[np.ndarray, np.ndarray]:
    if record.image.suffix == ".npz":
        with np.load(record.image, allow_pickle=False) as data:
            image_key = next((k for k in _FAIRSEG_IMAGE_KEYS if k in data), None)
            mask_key = next((k for k in _FAIRSEG_MASK_KEYS if k in data), None)
            if image_key is None or mask_key is None:
                raise MedzooDataError(
                    record.image,
                    f"keys {sorted(data.keys())}",
                    f"one of {_FAIRSEG_IMAGE_KEYS} and {_FAIRSEG_MASK_KEYS}",
                )
            image = np.asarray(data[image_key])
            mask = np.asarray(data[mask_key]).astype(np.int64)
        # FairSeg codes rim as -1 and cup as -2 (official loader: -1 -> 1, -2 -> 2).
        mask = np.where(mask < 0, -mask, mask)
        return image, mask
    return read_image(record.image).array, read_image(record.mask).array


class SensitiveSegmentationDataset(Dataset):
    """Images, masks and integer groups for a list of records.

    Args:
        records: the samples.
        group_ids: attribute value -> group index.
        image_size: (H, W) every sample is resized to (bilinear image, nearest mask).
        in_channels: 1 (grey) or 3.
        num_classes: classes including background (bounds the mask labels).
    """

    def __init__(
        self,
        records: Sequence[SegmentationRecord],
        group_ids: dict[Any, int],
        image_size: Sequence[int],
        in_channels: int,
        num_classes: int,
    ) -> None:
        self.records = list(records)
        self.group_ids = group_ids
        self.image_size = tuple(int(s) for s in image_size)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image, mask = _load_pair(record)
        if image.shape[:2] != mask.shape[:2]:
            raise MedzooDataError(
                f"{record.image} / {record.mask}",
                f"image size {image.shape[:2]} and mask size {mask.shape[:2]}",
                "a mask of the image's size",
            )
        labels = torch.from_numpy(_as_labels(mask, record.mask, self.num_classes))
        if tuple(labels.shape) != self.image_size:
            labels = F.interpolate(labels[None, None].float(), size=self.image_size, mode="nearest")[
                0, 0
            ].long()
        return {
            "image": prepare_image(image, self.image_size, self.in_channels, str(record.image)),
            "mask": labels,
            "group": torch.tensor(self.group_ids[record.attribute], dtype=torch.long),
            "index": index,
            "name": record.image.name,
        }


class PredictImageDataset(Dataset):
    """Images for ``predict``: ``{"image": (C, H, W), "index", "path", "original_size": (2,)}``."""

    def __init__(self, files: Sequence[Path], image_size: Sequence[int], in_channels: int) -> None:
        self.files = list(files)
        self.image_size = tuple(int(s) for s in image_size)
        self.in_channels = int(in_channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        array = read_image(path).array
        return {
            "image": prepare_image(array, self.image_size, self.in_channels, str(path)),
            "index": index,
            "path": str(path),
            "original_size": torch.tensor(array.shape[:2]),
        }


class SegmentationFairnessDataModule(MedzooDataModule):
    """Segmentation data with a sensitive attribute for both stages (``train-segmentor`` and APPLE).

    Args:
        root: dataset folder; ``None`` = the demo set generated under ``$MEDZOO_CACHE/apple-fairness/``.
        layout: ``generic``, ``tusc`` or ``fairseg`` (module docstring).
        attribute: the sensitive attribute (CSV column or FairSeg key).
        groups: attribute values in group-index order; default: the sorted values found.
        attribute_bins: bin edges turning a numeric attribute into groups (``np.digitize``), e.g. ``[60]``.
        csv, image_dir, mask_dir: the generic layout's file names.
        list_dir: FairSeg's folder of the official ``train.txt`` / ``test.txt``.
        image_size: (H, W) of the network input.
        in_channels, num_classes: as the segmentor.
        val_fraction, test_fraction: seeded split fractions where the layout has no split.
        synthetic_images, synthetic_size: the demo set's size (only when ``root`` is None or empty).
        batch_size, num_workers, seed, predict_root, cache_dir: the contract's arguments.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        layout: str = "generic",
        attribute: str = "sex",
        groups: list[str] | None = None,
        attribute_bins: list[float] | None = None,
        csv: str = "metadata.csv",
        image_dir: str = "images",
        mask_dir: str = "masks",
        list_dir: str = "lists",
        image_size: tuple[int, int] = (224, 224),
        in_channels: int = 1,
        num_classes: int = 2,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        synthetic_images: int = 320,
        synthetic_size: int = 64,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        if layout not in LAYOUTS:
            raise MedzooDataError("--data.layout", repr(layout), f"one of {sorted(LAYOUTS)}")
        self.layout, self.attribute = layout, attribute
        self.groups = None if groups is None else [str(g) for g in groups]
        self.attribute_bins = None if attribute_bins is None else [float(b) for b in attribute_bins]
        self.csv, self.image_dir, self.mask_dir, self.list_dir = csv, image_dir, mask_dir, list_dir
        self.image_size = tuple(int(s) for s in image_size)
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.synthetic_images, self.synthetic_size = int(synthetic_images), int(synthetic_size)
        self.datasets: dict[str, SensitiveSegmentationDataset] = {}
        self.group_names: list[str] = []

    def data_root(self) -> Path:
        """The dataset folder; the demo set is generated on first use (``root`` None or an empty folder)."""
        root = self.root if self.root is not None else self.demo_dir() / "demo"
        empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
        if empty and (self.root is None or self.layout == "generic"):
            self._generate_demo(root)
        if not root.is_dir():
            raise MedzooDataError(root, "no such folder", f"a dataset folder in the {self.layout!r} layout")
        return root

    def _generate_demo(self, root: Path) -> None:
        """Write the demo set into a private folder, then move it into place in one rename, so that no
        other process ever sees a half-written set."""
        import os
        import shutil

        from apple_fairness.synthetic import make_fairness_demo

        root.parent.mkdir(parents=True, exist_ok=True)
        staging = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        make_fairness_demo(staging, self.synthetic_images, self.synthetic_size, seed=self.seed)
        try:
            os.replace(staging, root)  # onto a missing or empty folder
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process finished first
            if not (root / "metadata.csv").is_file():
                raise

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before `setup`: the demo set is generated once.
        self.data_root()

    def _group_key(self, value: Any) -> Any:
        if self.attribute_bins is not None:
            try:
                number = float(value)
            except (TypeError, ValueError) as error:
                raise MedzooDataError(
                    f"attribute {self.attribute!r}", repr(value), "a number (attribute_bins is set)"
                ) from error
            return int(np.digitize(number, self.attribute_bins))
        return str(value)

    def load_records(self) -> list[SegmentationRecord]:
        """The layout's records with the attribute mapped to group keys (strings, or bin indices)."""
        root = self.data_root()
        records = LAYOUTS[self.layout](
            root=root,
            csv=self.csv,
            attribute=self.attribute,
            image_dir=self.image_dir,
            mask_dir=self.mask_dir,
            list_dir=self.list_dir,
        )
        if not records:
            raise MedzooDataError(root, "no samples", f"samples in the {self.layout!r} layout")
        return [SegmentationRecord(r.image, r.mask, self._group_key(r.attribute), r.split) for r in records]

    def _group_ids(self, records: Sequence[SegmentationRecord]) -> dict[Any, int]:
        found = sorted({r.attribute for r in records}, key=str)
        if self.groups is not None:
            unknown = [v for v in found if str(v) not in self.groups]
            if unknown:
                raise MedzooDataError(
                    f"attribute {self.attribute!r}",
                    f"values {unknown}",
                    f"one of --data.groups {self.groups}",
                )
            order = {g: i for i, g in enumerate(self.groups)}
            ids = {v: order[str(v)] for v in found}
            names = list(self.groups)
        else:
            ids = {v: i for i, v in enumerate(found)}
            names = [str(v) for v in found]
        if len(set(ids.values())) < 2:
            raise MedzooDataError(
                f"attribute {self.attribute!r}",
                f"a single group ({names[0] if names else 'none'}) in {len(records)} samples",
                "at least two groups: fairness compares groups",
            )
        self.group_names = names
        return ids

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            return
        if self.datasets:
            return
        records = self.load_records()
        ids = self._group_ids(records)
        by_split: dict[str, list[SegmentationRecord]] = {"train": [], "val": [], "test": []}
        if all(r.split is not None for r in records):
            for r in records:
                by_split[r.split].append(r)
        if not by_split["val"] and not (by_split["test"] and not by_split["train"]):
            # No validation split on disk (FairSeg has train/test only): hold out part of train (seeded).
            pool = by_split["train"] if by_split["test"] else records
            fractions = (self.val_fraction,) if by_split["test"] else (self.val_fraction, self.test_fraction)
            parts = self._stratified_split(pool, fractions)
            held = {int(i) for part in parts for i in part}
            by_split["val"] = [pool[i] for i in parts[0]]
            if not by_split["test"]:
                by_split["test"] = [pool[i] for i in parts[1]]
            by_split["train"] = [r for i, r in enumerate(pool) if i not in held]
        for split, items in by_split.items():
            if items:
                self.datasets[split] = SensitiveSegmentationDataset(
                    items, ids, self.image_size, self.in_channels, self.num_classes
                )

    def _stratified_split(
        self, pool: Sequence[SegmentationRecord], fractions: Sequence[float]
    ) -> list[list[int]]:
        """``seeded_split`` within each attribute group, so every split holds every group in proportion."""
        parts: list[list[int]] = [[] for _ in fractions]
        for value in sorted({r.attribute for r in pool}, key=str):
            members = [i for i, r in enumerate(pool) if r.attribute == value]
            for part, chosen in zip(parts, seeded_split(len(members), fractions, self.seed), strict=True):
                part.extend(members[int(i)] for i in chosen)
        return [sorted(part) for part in parts]

    def split(self, name: str) -> SensitiveSegmentationDataset:
        """The dataset of split ``name`` (``train``, ``val``, ``test``); a clear error when it is empty."""
        if name not in self.datasets:
            raise MedzooDataError(
                f"split {name!r}", "no samples", "a non-empty split (a split column, list or the fractions)"
            )
        return self.datasets[name]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.split("train"))

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.split("val"))

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.split("test"))

    def predict_dataloader(self) -> DataLoader:
        dataset = PredictImageDataset(self.predict_files(), self.image_size, self.in_channels)
        return self.eval_loader(dataset)
