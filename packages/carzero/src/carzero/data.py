"""Data for CARZero: report sentences, image transforms, the paired training set and the five test sets.

Independent of `carzero.models`: it yields images as tensors and texts as strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from medzoo.errors import MedzooDataError
from medzoo.io import list_images
from medzoo.lightning import MedzooDataModule
from medzoo.synthetic import default_cache_dir

NORMALIZE_MEAN = 0.4978
NORMALIZE_STD = 0.2449
FRONTAL_VIEWS = ("PA", "AP")
ALIGNED_COLUMN = "aligned_report"  # written by `carzero align-reports` (or on the fly: align_reports=True)

CHESTXRAY14_CLASSES = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
CHEXPERT_COMPETITION_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
CHESTXDET10_CLASSES = (
    "Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax",
)  # fmt: skip
# Our choice of OpenI classes (MeSH "major" terms; first component, case-insensitive); overridable.
OPENI_CLASSES = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Pulmonary Edema", "Pleural Effusion",
    "Pulmonary Emphysema", "Pulmonary Fibrosis", "Fractures, Bone", "Hernia, Hiatal", "Infiltrate",
    "Lung Diseases, Interstitial",
    "Mass", "Nodule", "Opacity", "Pneumonia", "Pneumothorax", "Calcinosis", "Granulomatous Disease",
)  # fmt: skip

_NUMBERED_ITEM = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")


# ----------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------


def split_sentences(report: str) -> list[str]:
    """Split a report into CARZero's training sentences.

    Newlines become spaces; the text is split at numbered items ("1.") and at every '.'; each piece is
    lower-cased and reduced to its ``\\w+`` words (ASCII only); pieces of one word or fewer are dropped.

    Example: "1. Small left effusion. No pneumothorax.\\nOK." -> ["small left effusion", "no pneumothorax"].
    """
    if not isinstance(report, str):
        return []
    sentences = []
    for item in _NUMBERED_ITEM.split(report.replace("\n", " ")):
        for piece in item.split("."):
            words = [w.encode("ascii", "ignore").decode("ascii") for w in _WORD.findall(piece.lower())]
            words = [w for w in words if w]
            if len(words) > 1:
                sentences.append(" ".join(words))
    return sentences


# ----------------------------------------------------------------------------------------------------
# Images and transforms
# ----------------------------------------------------------------------------------------------------


def read_cxr(path: str | Path) -> Image.Image:
    """Read a chest X-ray (PNG/JPEG/DICOM/...) as an 8-bit RGB PIL image.

    Non-uint8 pixels (16-bit PNG, DICOM) are min-max scaled to [0, 255]. Colour images are converted to grey
    first, so every input ends up the same three identical channels.
    """
    from medzoo.io import read_image

    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "an existing image file (PNG, JPEG, DICOM, ...)")
    array = read_image(path).array
    if array.ndim == 3:
        array = np.asarray(Image.fromarray(array[..., :3].astype(np.uint8)).convert("L"))
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        array = array.round().astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


class ResizeLongSideAndPad:
    """Resize so the long side equals `size` (aspect kept), then zero-pad the short side to a square.

    Input: a PIL image; output: a `size` x `size` PIL image, the original centred.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = int(size)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = self.size / max(width, height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = image.resize(new_size, Image.Resampling.BILINEAR)
        canvas = Image.new(image.mode, (self.size, self.size))
        canvas.paste(resized, ((self.size - new_size[0]) // 2, (self.size - new_size[1]) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def build_transform(train: bool, resize: int = 256, crop: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """CARZero's transforms: long side -> `resize`, pad; train: RandomCrop, hflip .3, affine, jitter.

    Training: RandomCrop(crop), RandomHorizontalFlip(0.3), RandomAffine(30 deg, translate 0.1,
    scale 0.9-1.1), ColorJitter(brightness 0.8-1.2, contrast 0.8-1.2). Test: CenterCrop(crop).
    Both end with ToTensor and Normalize(0.4978, 0.2449) on all three channels.

    Returns a callable PIL image -> (3, crop, crop) float tensor (roughly zero mean, unit variance).
    """
    steps: list[Any] = [ResizeLongSideAndPad(resize)]
    if train:
        steps += [
            T.RandomCrop(crop),
            T.RandomHorizontalFlip(0.3),
            T.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            T.ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2)),
        ]
    else:
        steps.append(T.CenterCrop(crop))
    steps += [T.ToTensor(), T.Normalize([NORMALIZE_MEAN] * 3, [NORMALIZE_STD] * 3)]
    return T.Compose(steps)


# ----------------------------------------------------------------------------------------------------
# Training pairs (MIMIC-CXR style CSV)
# ----------------------------------------------------------------------------------------------------


class ReportPairDataset(Dataset):
    """Image-sentence pairs: each item pairs an image with ONE random sentence of its report texts.

    Args:
        image_paths: (N,) image files.
        texts: (N,) lists of texts per image (e.g. [impression, aligned report]); their sentences
            (`split_sentences`) form the pool the sentence is drawn from.
        transform: PIL image -> tensor.
        seed: the sentence drawn for item i in epoch e depends only on (seed, e, i).
        where: names the source (CSV path) in errors.

    Items: {"image": (3, H, W) float, "text": str}. Raises MedzooDataError for a row whose texts have no
    sentence of two words or more.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        texts: Sequence[Sequence[str]],
        transform: Callable[[Image.Image], torch.Tensor],
        seed: int = 0,
        where: str = "reports",
    ) -> None:
        self.image_paths = [Path(p) for p in image_paths]
        self.sentences = []
        for row, (path, row_texts) in enumerate(zip(self.image_paths, texts, strict=True)):
            pool = [s for text in row_texts for s in split_sentences(text)]
            if not pool:
                raise MedzooDataError(
                    f"{where} (row {row}, image {path.name})",
                    f"an empty report {list(row_texts)!r}",
                    "report text with at least one sentence of two or more words",
                )
            self.sentences.append(pool)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pool = self.sentences[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return {
            "image": self.transform(read_cxr(self.image_paths[index])),
            "text": pool[int(rng.integers(len(pool)))],
        }


class LabelledImageDataset(Dataset):
    """Images with multi-label targets, for zero-shot validation and testing.

    Items: {"image": (3, H, W) float, "labels": (C,) float in {0, 1}, "index": int}.
    """

    def __init__(self, image_paths: Sequence[Path], labels: np.ndarray, transform: Callable) -> None:
        self.image_paths = [Path(p) for p in image_paths]
        self.labels = np.asarray(labels, dtype=np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.transform(read_cxr(self.image_paths[index])),
            "labels": torch.from_numpy(self.labels[index]),
            "index": index,
        }


class ImageFolderDataset(Dataset):
    """Every image file under a folder (sorted), for `carzero zeroshot`. Items: {"image", "index"}."""

    def __init__(self, folder: str | Path, transform: Callable) -> None:
        self.image_paths = list_images(folder, recursive=True)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.transform(read_cxr(self.image_paths[index])), "index": index}


# ----------------------------------------------------------------------------------------------------
# The five official test sets
# ----------------------------------------------------------------------------------------------------


@dataclass
class TestSet:
    """A zero-shot test set: image files and (N, C) 0/1 labels for `class_names`."""

    name: str
    class_names: list[str]
    image_paths: list[Path]
    labels: np.ndarray

    def positives(self) -> np.ndarray:
        """(C,) number of positive images per class."""
        return self.labels.sum(axis=0).astype(np.int64)


def _find_one(root: Path, patterns: Sequence[str], what: str) -> Path:
    for pattern in patterns:
        matches = sorted(root.glob(pattern))
        if matches:
            return matches[0]
    raise MedzooDataError(root, f"no {what}", f"a file matching {list(patterns)} ({what})")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], where: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MedzooDataError(where, f"columns {list(frame.columns)}", f"also the columns {missing}")


def _check_images(paths: Sequence[Path], where: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MedzooDataError(
            where,
            f"{len(missing)} of {len(paths)} listed images missing on disk, first {missing[0]}",
            "every listed image present (or pass check_images=False)",
        )


def load_chestxray14(root: str | Path, split: str = "test", check_images: bool = True) -> TestSet:
    """NIH ChestX-ray14 in its released layout.

    Layout: ``root/Data_Entry_2017*.csv[.gz]`` (also looked for in ``root/metadata/``), ``root/test_list.txt``
    (official test split; ``split="all"`` uses every row instead) and the PNGs in ``root/images/`` or the
    release's ``root/images_*/images/``. Labels: the 14 findings of "Finding Labels" ('|'-separated).
    """
    root = Path(root)
    table_path = _find_one(
        root,
        ["Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz", "metadata/Data_Entry_2017*.csv*"],
        "Data_Entry_2017 label table",
    )
    table = pd.read_csv(table_path)
    _require_columns(table, ["Image Index", "Finding Labels"], table_path)
    if split == "test":
        list_path = root / "test_list.txt"
        if not list_path.is_file():
            raise MedzooDataError(list_path, "no such file", "the official test_list.txt (or split='all')")
        names = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        table = table.set_index("Image Index").loc[lambda t: t.index.isin(names)].reset_index()
        if len(table) != len(set(names)):
            raise MedzooDataError(list_path, f"{len(set(names)) - len(table)} names not in {table_path.name}",
                                  "every test image listed in the label table")  # fmt: skip
    elif split != "all":
        raise MedzooDataError("split", repr(split), "'test' or 'all'")
    findings = table["Finding Labels"].fillna("").str.split("|")
    labels = np.array([[name in row for name in CHESTXRAY14_CLASSES] for row in findings], dtype=np.float32)
    folders = [root / "images", *sorted(root.glob("images_*/images"))]
    index = {p.name: p for folder in folders[1:] if folder.is_dir() for p in folder.iterdir()}
    paths = [index.get(name, folders[0] / name) for name in table["Image Index"]]
    if check_images:
        _check_images(paths, table_path)
    return TestSet("chestxray14", list(CHESTXRAY14_CLASSES), paths, labels)


def load_chexpert(
    root: str | Path, csv: str = "test_labels.csv", frontal_only: bool = False, check_images: bool = True
) -> TestSet:
    """CheXpert test set (500 patients): ``root/<csv>`` with a ``Path`` column relative to ``root`` (a leading
    ``CheXpert-v1.0*/`` folder is tried both with and without) and 0/1 columns; the 5 competition classes.
    """
    root = Path(root)
    csv_path = root / csv
    if not csv_path.is_file():
        csv_path = _find_one(root, ["test_labels.csv", "test.csv", "*/test_labels.csv"], "CheXpert test CSV")
    table = pd.read_csv(csv_path)
    _require_columns(table, ["Path", *CHEXPERT_COMPETITION_CLASSES], csv_path)
    if frontal_only:
        table = table[table["Path"].str.contains("frontal")].reset_index(drop=True)
    paths = []
    for relative in table["Path"]:
        path = root / relative
        if not path.is_file() and "/" in relative:
            path = root / relative.split("/", 1)[1]
        paths.append(path)
    labels = (table[list(CHEXPERT_COMPETITION_CLASSES)].fillna(0).to_numpy() == 1).astype(np.float32)
    if check_images:
        _check_images(paths, csv_path)
    return TestSet("chexpert", list(CHEXPERT_COMPETITION_CLASSES), paths, labels)


def parse_padchest_labels(text: Any) -> list[str]:
    """PadChest's ``Labels`` cell, e.g. "['pleural effusion', ' cardiomegaly']" -> a list of names."""
    if not isinstance(text, str):
        return []
    items = text.strip().strip("[]").split(",")
    return [item.strip().strip("'\"").strip().lower() for item in items if item.strip().strip("'\"").strip()]


def load_padchest(
    root: str | Path,
    physician_only: bool = True,
    frontal_only: bool = True,
    exclude: Sequence[str] = ("normal", "exclude", "suboptimal study", "unchanged"),
    check_images: bool = True,
) -> TestSet:
    """PadChest: ``root/PADCHEST_chest_x_ray_images_labels_160K*.csv[.gz]`` with ImageID, ImageDir,
    Labels, MethodLabel, Projection; images in ``root/<ImageDir>/<ImageID>`` or ``root/images/<ImageID>``.

    The test set is the physician-labelled frontal (PA, AP, AP_horizontal) subset; classes are every label in
    it (about 190) except `exclude`.
    """
    root = Path(root)
    csv_path = _find_one(root, ["PADCHEST*.csv", "PADCHEST*.csv.gz"], "PadChest label CSV")
    table = pd.read_csv(csv_path, low_memory=False)
    _require_columns(table, ["ImageID", "Labels"], csv_path)
    if physician_only and "MethodLabel" in table:
        table = table[table["MethodLabel"] == "Physician"]
    if frontal_only and "Projection" in table:
        table = table[table["Projection"].isin(["PA", "AP", "AP_horizontal"])]
    table = table.reset_index(drop=True)
    rows = [set(parse_padchest_labels(cell)) - set(exclude) for cell in table["Labels"]]
    classes = sorted(set().union(*rows)) if rows else []
    labels = np.array([[name in row for name in classes] for row in rows], dtype=np.float32)
    paths = []
    for _, record in table.iterrows():
        candidate = root / "images" / record["ImageID"]
        if "ImageDir" in table and not candidate.is_file():
            candidate = root / str(int(record["ImageDir"])) / record["ImageID"]
        paths.append(candidate)
    if check_images:
        _check_images(paths, csv_path)
    return TestSet("padchest", classes, paths, labels.reshape(len(rows), len(classes)))


def load_openi(
    root: str | Path, class_names: Sequence[str] = OPENI_CLASSES, check_images: bool = True
) -> TestSet:
    """OpenI (Indiana University): ``root/ecgen-radiology/*.xml`` reports and ``root/NLMCXR_png/<id>.png``.

    Each report's ``<parentImage id=...>`` images get the labels of its MeSH ``<major>`` terms; a class is
    positive when a term's first component (before '/') equals the class name, case-insensitively.
    """
    from xml.etree import ElementTree

    root = Path(root)
    reports = sorted((root / "ecgen-radiology").glob("*.xml"))
    if not reports:
        raise MedzooDataError(root / "ecgen-radiology", "no XML reports", "OpenI's ecgen-radiology/*.xml")
    wanted = {name.lower(): i for i, name in enumerate(class_names)}
    paths, rows = [], []
    for report in reports:
        try:
            tree = ElementTree.parse(report)
        except ElementTree.ParseError as error:
            raise MedzooDataError(report, f"invalid XML ({error})", "an OpenI report XML") from None
        terms = [(node.text or "").split("/")[0].strip().lower() for node in tree.iter("major")]
        row = np.zeros(len(class_names), dtype=np.float32)
        for term in terms:
            if term in wanted:
                row[wanted[term]] = 1
        for image in tree.iter("parentImage"):
            paths.append(root / "NLMCXR_png" / f"{image.get('id')}.png")
            rows.append(row)
    if check_images:
        _check_images(paths, root / "ecgen-radiology")
    labels = np.array(rows, dtype=np.float32).reshape(len(rows), len(class_names))
    return TestSet("openi", list(class_names), paths, labels)


def load_chestxdet10(root: str | Path, json_name: str = "test.json", check_images: bool = True) -> TestSet:
    """ChestX-Det10: ``root/<json_name>`` (a list of {"file_name", "syms", "boxes"}) and the images in
    ``root/test_data/`` (or ``root/test/``). A class is positive when it is among the image's ``syms``.
    """
    root = Path(root)
    json_path = root / json_name
    if not json_path.is_file():
        raise MedzooDataError(json_path, "no such file", "ChestX-Det10's test.json")
    try:
        records = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise MedzooDataError(json_path, f"invalid JSON ({error})", "a list of {file_name, syms}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "file_name" in r for r in records):
        raise MedzooDataError(json_path, "another structure", "a list of {file_name, syms, boxes} records")
    folder = root / "test_data" if (root / "test_data").is_dir() else root / "test"
    paths = [folder / r["file_name"] for r in records]
    labels = np.array(
        [[name in r.get("syms", []) for name in CHESTXDET10_CLASSES] for r in records], dtype=np.float32
    ).reshape(len(records), len(CHESTXDET10_CLASSES))
    if check_images:
        _check_images(paths, json_path)
    return TestSet("chestxdet10", list(CHESTXDET10_CLASSES), paths, labels)


TEST_SETS: dict[str, Callable[..., TestSet]] = {
    "chestxray14": load_chestxray14,
    "chexpert": load_chexpert,
    "padchest": load_padchest,
    "openi": load_openi,
    "chestxdet10": load_chestxdet10,
}


def load_test_set(name: str, root: str | Path, **kwargs: Any) -> TestSet:
    """Load one of the five official test sets by name (see `TEST_SETS`)."""
    if name not in TEST_SETS:
        raise MedzooDataError("dataset", repr(name), f"one of {sorted(TEST_SETS)}")
    return TEST_SETS[name](root, **kwargs)


# ----------------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------------


def batch_size_for_epoch(schedule: dict[int, int], epoch: int) -> int:
    """The batch size of `epoch` from {first_epoch: batch_size}, e.g. {0: 64, 2: 128, 6: 256}."""
    starts = sorted(int(k) for k in schedule if int(k) <= epoch)
    if not starts:
        raise MedzooDataError("batch_size_schedule", repr(schedule), "an entry for epoch 0")
    return int({int(k): v for k, v in schedule.items()}[starts[-1]])


class CARZeroDataModule(MedzooDataModule):
    """MIMIC-CXR-style image-report pairs for training and labelled images for zero-shot evaluation.

    The CSV (`root/csv`) has one row per image: `image_column` (path relative to `root`), `split_column`
    (train / validate / test), `view_column` (PA, AP, LATERAL, ...), the report `text_columns` (e.g. the
    impression and the LLM-aligned report from `carzero align-reports`), and optionally one 0/1 column per
    finding in `class_names` (used for zero-shot validation AUC). Only frontal views are used.

    When `root` is None or missing and `synthetic` is given, `medzoo.synthetic.make_cxr_dataset(**synthetic)`
    writes a CXR-like dataset there (or into `cache_dir`) first: the offline demo.

    Args:
        root: dataset folder.
        csv: the CSV file name inside `root`.
        text_columns: report columns whose sentences form each image's sentence pool; missing columns
            are an error, empty cells are skipped.
        class_names: finding columns for zero-shot validation/testing (None: no zero-shot metrics).
        batch_size: validation/test batch size, and training batch size without a schedule.
        batch_size_schedule: {first_epoch: batch_size} for training, e.g. the paper's {0: 64, 2: 128, 6: 256};
            needs ``trainer.reload_dataloaders_every_n_epochs: 1``.
        resize, crop: transform sizes (paper: 256 and 224).
        test_set, test_root: evaluate `carzero test` on an official test set (`TEST_SETS`) instead of the
            CSV's test split.
        align_reports: add the column `aligned_report` = `carzero.alignment.rule_based_align` of the first
            text column when the CSV lacks it (the no-LLM path of `carzero align-reports`, run on the fly);
            list `aligned_report` in `text_columns` to train on it. The demo uses it on the synthetic reports.
        synthetic: keyword arguments of `make_cxr_dataset` for the demo.
        cache_dir: where the synthetic dataset goes when `root` is None (default
            `$MEDZOO_CACHE/carzero/demo`, i.e. `~/.cache/medzoo/carzero/demo`).
    """

    def __init__(
        self,
        root: str | None = None,
        csv: str = "reports.csv",
        image_column: str = "image",
        split_column: str = "split",
        view_column: str | None = "view",
        text_columns: list[str] | None = None,
        class_names: list[str] | None = None,
        frontal_views: list[str] | None = None,
        batch_size: int = 64,
        batch_size_schedule: dict[int, int] | None = None,
        resize: int = 256,
        crop: int = 224,
        test_set: str | None = None,
        test_root: str | None = None,
        align_reports: bool = False,
        synthetic: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.root = root
        self.csv = csv
        self.image_column = image_column
        self.split_column = split_column
        self.view_column = view_column
        self.text_columns = list(text_columns or ["report"])
        self.class_names = list(class_names) if class_names else []
        self.frontal_views = list(frontal_views or FRONTAL_VIEWS)
        self.batch_size_schedule = dict(batch_size_schedule) if batch_size_schedule else None
        self.resize = resize
        self.crop = crop
        self.test_set = test_set
        self.test_root = test_root
        self.align_reports = align_reports
        self.synthetic = synthetic
        self.cache_dir = cache_dir
        self.datasets: dict[str, Dataset] = {}

    def dataset_root(self) -> Path:
        """The data folder; writes the synthetic demo dataset first when needed."""
        if self.root is not None and Path(self.root).expanduser().exists():
            return Path(self.root).expanduser()
        if self.synthetic is None:
            raise MedzooDataError("data.root", repr(self.root), "an existing dataset folder")
        from medzoo.synthetic import make_cxr_dataset

        fallback = self.cache_dir or default_cache_dir("carzero") / "demo"
        target = Path(self.root or fallback).expanduser()
        if not (target / self.csv).is_file():
            make_cxr_dataset(target, **self.synthetic)
        return target

    def prepare_data(self) -> None:
        self.dataset_root()

    def _frame(self, root: Path) -> pd.DataFrame:
        csv_path = root / self.csv
        if not csv_path.is_file():
            raise MedzooDataError(csv_path, "no such file", "the training CSV")
        frame = pd.read_csv(csv_path)
        if self.align_reports and ALIGNED_COLUMN not in frame:
            from carzero.alignment import rule_based_align

            source = self.text_columns[0]
            _require_columns(frame, [source], csv_path)
            frame[ALIGNED_COLUMN] = [
                rule_based_align(text) if isinstance(text, str) and text.strip() else None
                for text in frame[source]
            ]
        needed = [self.image_column, self.split_column, *self.text_columns, *self.class_names]
        _require_columns(frame, needed + ([self.view_column] if self.view_column else []), csv_path)
        if self.view_column:
            frame = frame[frame[self.view_column].astype(str).str.upper().isin(self.frontal_views)]
        return frame.reset_index(drop=True)

    def _paths(self, root: Path, frame: pd.DataFrame, csv_path: Path) -> list[Path]:
        paths = [root / str(p) for p in frame[self.image_column]]
        _check_images(paths, csv_path)
        return paths

    def setup(self, stage: str | None = None) -> None:
        root = self.dataset_root()
        frame = self._frame(root)
        csv_path = root / self.csv
        train_tf = build_transform(True, self.resize, self.crop)
        test_tf = build_transform(False, self.resize, self.crop)
        for split, transform in (("train", train_tf), ("validate", test_tf)):
            part = frame[frame[self.split_column] == split]
            texts = [
                [t for t in row if isinstance(t, str)] for row in part[self.text_columns].itertuples(False)
            ]
            paths = self._paths(root, part, csv_path)
            self.datasets[split] = ReportPairDataset(paths, texts, transform, self.seed, where=str(csv_path))
            if self.class_names:
                labels = (part[self.class_names].fillna(0).to_numpy() == 1).astype(np.float32)
                self.datasets[f"{split}_labels"] = LabelledImageDataset(paths, labels, test_tf)
        if stage in ("test", None):
            if self.test_set:
                test = load_test_set(self.test_set, self.test_root or root)
                self.test_class_names = test.class_names
                self.datasets["test"] = LabelledImageDataset(test.image_paths, test.labels, test_tf)
            elif self.class_names:
                part = frame[frame[self.split_column] == "test"]
                labels = (part[self.class_names].fillna(0).to_numpy() == 1).astype(np.float32)
                self.test_class_names = self.class_names
                self.datasets["test"] = LabelledImageDataset(
                    self._paths(root, part, csv_path), labels, test_tf
                )

    def train_batch_size(self, epoch: int) -> int:
        if self.batch_size_schedule is None:
            return self.batch_size
        return batch_size_for_epoch(self.batch_size_schedule, epoch)

    def train_dataloader(self):
        dataset = self.datasets["train"]
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        dataset.set_epoch(epoch)
        batch_size = self.train_batch_size(epoch)
        # Contrastive batches need >= 2 pairs: drop a ragged last batch unless it is the only one.
        return self.train_loader(dataset, batch_size=batch_size, drop_last=len(dataset) > batch_size)

    def val_dataloader(self):
        loaders = [self.eval_loader(self.datasets["validate"])]
        if "validate_labels" in self.datasets:
            loaders.append(self.eval_loader(self.datasets["validate_labels"]))
        return loaders

    def test_dataloader(self):
        if "test" not in self.datasets:
            raise MedzooDataError(
                "data", "no test set", "data.class_names (CSV test split) or data.test_set + data.test_root"
            )
        return self.eval_loader(self.datasets["test"])
