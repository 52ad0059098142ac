"""Data for LTML-MIMIC-CXR: label tables in official layouts, stratified splits, samplers, the DataModule.

Independent of ``ltml_cxr.models`` and ``ltml_cxr.module``: it yields images as tensors and labels as 0/1.

Layouts (``LAYOUTS``, chosen with ``--data.layout``):

- ``ltml_mimic``: the LTML-MIMIC-CXR label CSV over MIMIC-CXR-JPG (39 classes; 1 positive, 0/-1/blank -> 0).
- ``nih``: NIH ChestX-ray14 (``Data_Entry_2017*.csv[.gz]``, the official ``test_list.txt``), the layout
  the generated demo set is written in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

from medzoo.errors import MedzooDataError
from medzoo.io import write_json
from medzoo.lightning import MedzooDataModule, epoch_seed

__all__ = [
    "CHESTXRAY14_CLASSES",
    "LAYOUTS",
    "LTML_CLASSES",
    "CXRImageDataset",
    "ClassAwareSampler",
    "LTMLDataModule",
    "LabelTable",
    "build_transform",
    "iterative_split",
    "load_chestxray14",
    "load_ltml_mimic",
    "read_cxr",
]

LTML_CLASSES: tuple[str, ...] = (
    # 13 CheXpert findings ("No Finding" is not a class) ...
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax",
    "Support Devices",
    # ... and 26 rare findings mined from the reports.
    "Alveolar Lung Disease", "Aortic Aneurysm", "Bilateral Hilar Enlargement", "Bronchiectasis",
    "Cardiomyopathy", "Diaphragmatic Hernia", "Embolus", "Hemothorax", "Hypertension",
    "Left Atrial Enlargement", "Massive Cardiomegaly", "Mediastinal Shift", "Mitral Insufficiency",
    "Mucoid Impaction", "Multiple Pulmonary Nodules", "Pericardial Effusion", "Pleural Calcification",
    "Pleural Thickening", "Pneumomediastinum", "Pneumopericardium", "Pulmonary Arterial Hypertension",
    "Pulmonary Embolism", "Pulmonary Hypertension", "Segmental Atelectasis", "Small Lung Nodules",
    "Unilaterally Elevated Diaphragm",
)  # fmt: skip
"""The 39 LTML-MIMIC-CXR classes, in the order of the label CSV."""

CHESTXRAY14_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
"""The 14 ChestX-ray14 findings, in the dataset's column order."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------


def read_cxr(path: str | Path) -> Image.Image:
    """Read a radiograph (PNG/JPEG/DICOM, 8 or 16 bit) as an 8-bit RGB PIL image (grey repeated).

    Non-uint8 pixels are min-max scaled to [0, 255]; colour inputs are converted to grey first.
    """
    from medzoo.io import read_grey_uint8

    return Image.fromarray(read_grey_uint8(path)).convert("RGB")


def build_transform(train: bool, image_size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> (3, image_size, image_size) float tensor, ImageNet-normalised.

    Resize to a square (the reference resizes to 224 x 224); training adds a random horizontal flip (p .5),
    the reference's only augmentation.
    """
    steps: list[Any] = [T.Resize((image_size, image_size), antialias=True)]
    if train:
        steps.append(T.RandomHorizontalFlip(0.5))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


# ----------------------------------------------------------------------------------------------------
# Label tables in the official layouts
# ----------------------------------------------------------------------------------------------------


@dataclass
class LabelTable:
    """A labelled image set: one row per image.

    Attributes:
        paths: (N,) image files.
        labels: (N, C) float32 in {0, 1}.
        class_names: the C class names.
        patients: (N,) patient ids (for patient-level splits), or None.
        split: (N,) ``"train"``/``"val"``/``"test"`` from the dataset's official split; ``""`` for rows the
            official split leaves open (e.g. ChestX-ray14's train_val, to be split into train and val);
            None when the dataset has no official split.
    """

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    patients: np.ndarray | None = None
    split: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)


def _find_one(root: Path, patterns: Sequence[str], what: str) -> Path:
    for pattern in patterns:
        matches = sorted(root.glob(pattern))
        if matches:
            return matches[0]
    raise MedzooDataError(root, f"no {what}", f"a file matching {list(patterns)} ({what})")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], where: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MedzooDataError(where, f"columns {list(frame.columns)[:12]}", f"also the columns {missing}")


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _normalise_split(values: pd.Series, where: Path) -> np.ndarray:
    split = values.fillna("").astype(str).str.strip().str.lower().replace({"validate": "val"}).to_numpy()
    bad = sorted(set(split) - {*SPLITS, ""})
    if bad:
        raise MedzooDataError(where, f"split values {bad[:5]}", "train, val (or validate), test")
    return split


def load_chestxray14(
    root: str | Path, class_names: Sequence[str] | None = None, check_images: bool = True
) -> LabelTable:
    """NIH ChestX-ray14 in its released layout.

    Layout: ``root/Data_Entry_2017*.csv[.gz]`` (also in ``root/metadata/``) with ``Image Index``, ``Finding
    Labels`` ('|'-separated, "No Finding" = none) and ``Patient ID``; images in ``root/images/`` or the
    release's ``root/images_*/images/``. With ``root/test_list.txt`` the official split is used: listed
    images are ``test``, the others (``train_val_list.txt``) are left to be split into train and val.

    Args:
        root: the dataset folder.
        class_names: the findings to use (default the 14 of ``CHESTXRAY14_CLASSES``).
        check_images: fail when a listed image is missing.
    """
    root = Path(root)
    table_path = _find_one(
        root,
        ["Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz", "metadata/Data_Entry_2017*.csv*"],
        "Data_Entry_2017 label table",
    )
    table = pd.read_csv(table_path)
    _require_columns(table, ["Image Index", "Finding Labels", "Patient ID"], table_path)
    names = list(class_names or CHESTXRAY14_CLASSES)
    findings = table["Finding Labels"].fillna("").astype(str).str.split("|")
    labels = np.array([[name in row for name in names] for row in findings], dtype=np.float32)
    split = None
    test_list = root / "test_list.txt"
    if test_list.is_file():
        test_names = set(_read_list(test_list))
        unknown = test_names - set(table["Image Index"])
        if unknown:
            raise MedzooDataError(
                test_list, f"{len(unknown)} names not in {table_path.name}", "every test image in the table"
            )
        split = np.where(table["Image Index"].isin(test_names), "test", "")
    folders = [root / "images", *sorted(root.glob("images_*/images"))]
    index = {p.name: p for folder in folders[1:] if folder.is_dir() for p in folder.iterdir()}
    paths = [index.get(name, folders[0] / name) for name in table["Image Index"]]
    if check_images:
        _check_images(paths, table_path)
    return LabelTable(paths, labels.reshape(len(table), len(names)), names,
                      table["Patient ID"].to_numpy(), split)  # fmt: skip


def mimic_jpg_path(root: Path, subject_id: Any, study_id: Any, dicom_id: str) -> Path:
    """MIMIC-CXR-JPG's image path: ``root/files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    subject = str(int(subject_id))
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{int(study_id)}" / f"{dicom_id}.jpg"


def load_ltml_mimic(
    root: str | Path,
    labels_csv: str = "LTML_MIMIC_CXR_label_.csv",
    class_names: Sequence[str] | None = None,
    check_images: bool = True,
    path_column: str = "path",
) -> LabelTable:
    """The LTML-MIMIC-CXR label table over MIMIC-CXR-JPG.

    Layout: ``root/<labels_csv>`` (the reference's ``LTML_MIMIC_CXR_label_.csv``), one row per image, with
    one column per class (1 = positive; 0, -1 "uncertain" and blank = 0) and either ``path_column`` (the
    image path relative to ``root``) or ``dicom_id``, ``subject_id``, ``study_id`` locating MIMIC-CXR-JPG's
    ``root/files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``. The split comes from a ``split`` column (train /
    validate|val / test), else from the reference's lists ``root/test.txt`` and ``root/val.txt`` (dicom
    ids); else it is left to :func:`iterative_split`.
    """
    root = Path(root)
    csv_path = root / labels_csv
    if not csv_path.is_file():
        raise MedzooDataError(csv_path, "no such file", "the LTML-MIMIC-CXR label CSV (--data.labels_csv)")
    table = pd.read_csv(csv_path)
    names = list(class_names or LTML_CLASSES)
    _require_columns(table, names, csv_path)
    if path_column in table:
        paths = [root / str(p) for p in table[path_column]]
    else:
        _require_columns(table, ["dicom_id", "subject_id", "study_id"], csv_path)
        paths = [
            mimic_jpg_path(root, s, t, str(d))
            for s, t, d in zip(table["subject_id"], table["study_id"], table["dicom_id"], strict=True)
        ]
    values = table[names].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
    bad = sorted(set(np.unique(values).tolist()) - {-1.0, 0.0, 1.0})
    if bad:
        raise MedzooDataError(csv_path, f"label values {bad[:5]}", "1, 0, -1 (uncertain) or blank")
    labels = (values == 1).astype(np.float32)  # uncertain (-1) -> 0, as the reference does
    split = None
    if "split" in table:
        split = _normalise_split(table["split"], csv_path)
    elif (root / "test.txt").is_file() and (root / "val.txt").is_file() and "dicom_id" in table:
        ids = table["dicom_id"].astype(str)
        split = np.where(ids.isin(set(_read_list(root / "test.txt"))), "test", "")
        split = np.where(ids.isin(set(_read_list(root / "val.txt"))), "val", split)
        split = np.where(split == "", "train", split)
    patients = table["subject_id"].to_numpy() if "subject_id" in table else None
    if check_images:
        _check_images(paths, csv_path)
    return LabelTable(paths, labels, names, patients, split)


def _check_images(paths: Sequence[Path], where: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MedzooDataError(
            where,
            f"{len(missing)} of {len(paths)} listed images missing on disk, first {missing[0]}",
            "every listed image present",
        )


LAYOUTS: dict[str, Callable[..., LabelTable]] = {"ltml_mimic": load_ltml_mimic, "nih": load_chestxray14}
"""``--data.layout`` name -> loader ``(root, **options) -> LabelTable``."""


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------


def _stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held-out) row indices; held-out is ``fraction`` of rows, iteratively stratified by label."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if fraction <= 0 or len(labels) < 2:
        return np.arange(len(labels)), np.empty(0, dtype=np.int64)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(labels)), labels))
    return np.sort(keep), np.sort(held)


def iterative_split(
    labels: np.ndarray,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    groups: np.ndarray | None = None,
    fixed: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Iterative multi-label stratified train / val / test split (Sechidis et al.; iterative-stratification).

    As in the reference: ``test_fraction`` of the rows go to test, then ``val_fraction`` of the rest to val.
    With ``groups`` (patient ids) whole patients are split, stratified on each patient's union of labels, so
    no patient is in two splits.

    Args:
        labels: (N, C) 0/1.
        test_fraction, val_fraction: see above.
        groups: (N,) group ids for a patient-level split, or None for image level.
        fixed: (N,) an official split to keep (``"train"``/``"val"``/``"test"``); rows with ``""`` are split.
            If no row is ``"test"``, the test part is drawn as well; else only val is drawn from the rest.
        seed: the split seed.

    Returns:
        (N,) array of ``"train"``, ``"val"``, ``"test"``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    split = np.array([""] * n, dtype=object) if fixed is None else np.asarray(fixed, dtype=object).copy()
    open_rows = np.flatnonzero(split == "")
    if groups is None:
        units = open_rows[:, None]  # one unit per row
        unit_labels = labels[open_rows]
    else:
        keys, inverse = np.unique(np.asarray(groups)[open_rows], return_inverse=True)
        members = [open_rows[inverse == u] for u in range(len(keys))]
        units = members
        unit_labels = np.stack([labels[m].max(axis=0) for m in members]) if members else labels[:0]

    def assign(unit_ids: np.ndarray, name: str) -> None:
        for u in unit_ids:
            split[np.asarray(units[u])] = name

    remaining = np.arange(len(unit_labels))
    if not (split == "test").any():
        keep, held = _stratified_holdout(unit_labels, test_fraction, seed)
        assign(held, "test")
        remaining = keep
    if not (split == "val").any() and len(remaining):
        rel_keep, rel_held = _stratified_holdout(unit_labels[remaining], val_fraction, seed + 1)
        assign(remaining[rel_held], "val")
        remaining = remaining[rel_keep]
    assign(remaining, "train")
    return split.astype(str)


# ----------------------------------------------------------------------------------------------------
# Datasets and samplers
# ----------------------------------------------------------------------------------------------------


class CXRImageDataset(Dataset):
    """Images with optional multi-label targets.

    Items: ``{"image": (3, S, S) float, "index": int, "path": str}`` plus ``"labels": (C,) float`` in {0, 1}
    when ``labels`` is given.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: np.ndarray | None,
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {
            "image": self.transform(read_cxr(self.paths[index])),
            "index": index,
            "path": str(self.paths[index]),
        }
        if self.labels is not None:
            item["labels"] = torch.from_numpy(self.labels[index])
        return item


class ClassAwareSampler(Sampler[int]):
    """Class-aware sampling (Shen et al. 2016), the reference's ``ClassAwareSampler`` option.

    Each draw picks a class uniformly among the classes with positives, then one of its positive images
    uniformly; images with no positive form one more "class" so they are still seen. The draws depend only
    on ``(seed, epoch)`` (:meth:`set_epoch`), so resumed runs repeat them.

    Args:
        labels: (N, C) 0/1.
        num_samples: draws per epoch (default N).
        seed: the sampler seed.
    """

    def __init__(self, labels: np.ndarray, num_samples: int | None = None, seed: int = 0) -> None:
        labels = np.asarray(labels) > 0.5
        self.members = [np.flatnonzero(labels[:, c]) for c in range(labels.shape[1])]
        self.members.append(np.flatnonzero(~labels.any(axis=1)))
        self.members = [m for m in self.members if len(m)]
        self.num_samples = int(num_samples or len(labels))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        classes = rng.integers(len(self.members), size=self.num_samples)
        for c in classes:
            members = self.members[c]
            yield int(members[rng.integers(len(members))])

    def __len__(self) -> int:
        return self.num_samples


# ----------------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------------


class LTMLDataModule(MedzooDataModule):
    """Long-tailed multi-label CXR data: train / val / test in an official layout, plus predict files.

    The split is the dataset's own where it has one (a ``split`` column, the reference's ``val.txt`` /
    ``test.txt``, ChestX-ray14's ``test_list.txt``), completed by an iterative multi-label stratified split
    (:func:`iterative_split`: ``test_fraction`` to test, then ``val_fraction`` of the rest to val) at image
    or patient level. :attr:`class_counts` (positives per class of the TRAINING split) and
    :attr:`num_train` feed the Distribution-Balanced losses and the head/medium/tail grouping.

    Args:
        root: the dataset folder; None = the generated demo set (``medzoo.synthetic.make_cxr_dataset`` in the
            ChestX-ray14 layout) under ``$MEDZOO_CACHE/ltml-cxr/<demo_name()>``; a missing or empty folder
            with ``synthetic`` set is generated there.
        layout: ``"ltml_mimic"`` or ``"nih"`` (``LAYOUTS``).
        labels_csv, path_column: the label CSV of the ``ltml_mimic`` layout and its image-path column.
        class_names: the classes (default: the layout's, 39 or 14).
        split_level: ``"image"`` (the reference) or ``"patient"``.
        test_fraction, val_fraction: fractions of the stratified split (0.2, 0.1).
        image_size: the square input size (224).
        class_aware: sample training images with :class:`ClassAwareSampler` instead of shuffling.
        check_images: fail early when a listed image is missing.
        synthetic: ``make_cxr_dataset`` keyword arguments for the demo set; None = no generation.
        batch_size, num_workers, seed, predict_root: see ``MedzooDataModule``.
        cache_dir: accepted for the contract; this package has no preprocessing cache (images are decoded on
            the fly), so it is unused.
    """

    def __init__(
        self,
        root: str | None = None,
        layout: str = "ltml_mimic",
        labels_csv: str = "LTML_MIMIC_CXR_label_.csv",
        path_column: str = "path",
        class_names: list[str] | None = None,
        split_level: str = "image",
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        image_size: int = 224,
        class_aware: bool = False,
        check_images: bool = True,
        synthetic: dict[str, Any] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        if layout not in LAYOUTS:
            raise MedzooDataError("data.layout", repr(layout), f"one of {', '.join(LAYOUTS)}")
        if split_level not in ("image", "patient"):
            raise MedzooDataError("data.split_level", repr(split_level), "'image' or 'patient'")
        self.layout = layout
        self.labels_csv = labels_csv
        self.path_column = path_column
        self.class_names_arg = list(class_names) if class_names else None
        self.split_level = split_level
        self.test_fraction = float(test_fraction)
        self.val_fraction = float(val_fraction)
        self.image_size = int(image_size)
        self.class_aware = bool(class_aware)
        self.check_images = bool(check_images)
        self.synthetic = dict(synthetic) if synthetic is not None else None
        self.table: LabelTable | None = None
        self.split: np.ndarray | None = None

    # -- the dataset folder --------------------------------------------------------------------------------
    def dataset_root(self) -> Path:
        """The data folder; generates the synthetic demo set first when it is needed and configured."""
        target = Path(self.root).expanduser() if self.root is not None else self.demo_dir() / self.demo_name()
        record = target / "generator.json"  # the settings a generated set was made with
        if target.is_dir() and any(target.iterdir()):
            if self.synthetic is not None and record.is_file():
                made = json.loads(record.read_text())
                if made != json.loads(json.dumps(self.synthetic)):
                    raise MedzooDataError(
                        record, f"a demo set generated with {made}", f"{self.synthetic}; delete the folder"
                    )
            return target
        if self.synthetic is None:
            raise MedzooDataError(
                "--data.root",
                f"{target}: no such folder (or empty)",
                f"a dataset folder in the {self.layout} layout",
            )
        if self.layout != "nih":
            raise MedzooDataError("data.layout", repr(self.layout), "'nih' for the generated demo set")
        from medzoo.synthetic import make_cxr_dataset

        settings = dict(self.synthetic)
        if "size" in settings:
            settings["size"] = tuple(settings["size"])
        if self.class_names_arg:
            settings.setdefault("classes", self.class_names_arg)
        make_cxr_dataset(target, **settings)
        write_json(record, self.synthetic)
        return target

    def demo_name(self) -> str:
        """The demo set's folder name, keyed by its main settings, e.g. ``demo-n800-64x64-seed0``."""
        settings = self.synthetic or {}
        height, width = settings.get("size", (256, 256))
        return f"demo-n{settings.get('n_images', 64)}-{height}x{width}-seed{settings.get('seed', 0)}"

    def prepare_data(self) -> None:
        if self.root is None or self.synthetic is not None:
            self.dataset_root()

    def load_table(self) -> LabelTable:
        """The label table of the configured layout (read once)."""
        if self.table is None:
            root = self.dataset_root()
            options: dict[str, Any] = {"class_names": self.class_names_arg, "check_images": self.check_images}
            if self.layout == "ltml_mimic":
                options.update(labels_csv=self.labels_csv, path_column=self.path_column)
            self.table = LAYOUTS[self.layout](root, **options)
            if len(self.table) == 0:
                raise MedzooDataError(root, "an empty label table", "at least one labelled image")
        return self.table

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":  # predict reads only --data.predict_root; the classes come from the model
            return
        table = self.load_table()
        if self.split is None:
            fixed = table.split
            if fixed is not None and (fixed == "").sum() == 0 and not (fixed == "val").any():
                fixed = np.where(fixed == "train", "", fixed)  # carve val out of an official train split
            groups = table.patients if self.split_level == "patient" else None
            if self.split_level == "patient" and groups is None:
                raise MedzooDataError("data.split_level", "'patient'", "a layout with patient ids")
            self.split = iterative_split(
                table.labels,
                test_fraction=self.test_fraction,
                val_fraction=self.val_fraction,
                groups=groups,
                fixed=fixed,
                seed=self.seed,
            )
        self.datasets = {
            name: CXRImageDataset(
                [p for p, s in zip(table.paths, self.split, strict=True) if s == name],
                table.labels[self.split == name],
                build_transform(name == "train", self.image_size),
            )
            for name in SPLITS
        }

    # -- what the losses and metrics need ----------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return self.load_table().class_names

    @property
    def num_train(self) -> int:
        self._require_setup()
        return int((self.split == "train").sum())

    @property
    def class_counts(self) -> np.ndarray:
        """(C,) positives per class in the training split."""
        self._require_setup()
        return self.load_table().labels[self.split == "train"].sum(axis=0)

    def _require_setup(self) -> None:
        if self.split is None:
            self.setup("fit")

    # -- loaders -------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if not self.class_aware:
            return self.train_loader(dataset, drop_last=len(dataset) > self.batch_size)
        sampler = ClassAwareSampler(dataset.labels, seed=self.seed)
        if self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=len(dataset) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"])

    def predict_dataloader(self) -> DataLoader:
        dataset = CXRImageDataset(self.predict_files(), None, build_transform(False, self.image_size))
        return self.eval_loader(dataset)
