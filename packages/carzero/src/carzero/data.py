"""Data for CARZero: report sentences, image transforms, the paired training set and the DataModule.

Independent of `carzero.models`: it yields images as tensors and texts as strings. The five official test
sets are in `carzero.testsets`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from carzero.testsets import load_test_set, require_columns, require_images
from medzoo.errors import MedzooDataError
from medzoo.lightning import MedzooDataModule

NORMALIZE_MEAN = 0.4978
NORMALIZE_STD = 0.2449
FRONTAL_VIEWS = ("PA", "AP")
ALIGNED_COLUMN = "aligned_report"  # written by `carzero align-reports` (or on the fly: align_reports=True)

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
    from medzoo.io import read_grey_uint8

    return Image.fromarray(read_grey_uint8(path)).convert("RGB")


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


class ResizedImageCache:
    """A preprocessing cache: each X-ray read, resized (long side -> `size`) and padded once, kept as a PNG.

    Decoding a full-size MIMIC-CXR JPEG or DICOM and resizing it is the main data cost of an epoch; the cached
    image is exactly what `ResizeLongSideAndPad(size)` makes of `read_cxr(path)`, so the transforms (which
    start with that same step, then an identity) give the same tensors with or without the cache.

    Args:
        folder: the cache folder (`--data.cache_dir`); files go to `<folder>/resized-<size>/`.
        size: the long side (the transforms' `resize`).

    Calling it with a path returns the padded RGB PIL image; a cache file is keyed by the source's absolute
    path, size and modification time, and written atomically (safe with several loader workers).
    """

    def __init__(self, folder: str | Path, size: int) -> None:
        self.folder = Path(folder).expanduser() / f"resized-{int(size)}"
        self.resize = ResizeLongSideAndPad(size)

    def cache_path(self, path: Path) -> Path:
        import hashlib

        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{self.resize.size}"
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.png"

    def __call__(self, path: str | Path) -> Image.Image:
        from medzoo.io import write_png

        path = Path(path)
        if not path.is_file():
            raise MedzooDataError(path, "no such file", "an existing image file (PNG, JPEG, DICOM, ...)")
        cached = self.cache_path(path)
        if cached.is_file():
            with Image.open(cached) as image:
                return image.convert("RGB")
        image = self.resize(read_cxr(path))
        write_png(cached, np.asarray(image.convert("L")))
        return image


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
        reader: path -> RGB PIL image (`read_cxr`, or a `ResizedImageCache`).
        findings_first: draw only from the sentences that state a finding (`states_a_finding`) when the
            image has any, else from all of its sentences (ours; the paper draws from all).

    Items: {"image": (3, H, W) float, "text": str, "index": int}. Raises MedzooDataError for a row whose texts
    have no sentence of two words or more.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        texts: Sequence[Sequence[str]],
        transform: Callable[[Image.Image], torch.Tensor],
        seed: int = 0,
        where: str = "reports",
        reader: Callable[[Path], Image.Image] = read_cxr,
        findings_first: bool = False,
    ) -> None:
        from carzero.alignment import states_a_finding

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
            if findings_first:
                pool = [s for s in pool if states_a_finding(s)] or pool
            self.sentences.append(pool)
        self.transform = transform
        self.reader = reader
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
            "image": self.transform(self.reader(self.image_paths[index])),
            "text": pool[int(rng.integers(len(pool)))],
            "index": index,
        }


class LabelledImageDataset(Dataset):
    """Images with multi-label targets, for zero-shot validation and testing.

    Items: {"image": (3, H, W) float, "labels": (C,) float in {0, 1}, "index": int}.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        labels: np.ndarray,
        transform: Callable,
        reader: Callable[[Path], Image.Image] = read_cxr,
    ) -> None:
        self.image_paths = [Path(p) for p in image_paths]
        self.labels = np.asarray(labels, dtype=np.float32)
        self.transform = transform
        self.reader = reader

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.transform(self.reader(self.image_paths[index])),
            "labels": torch.from_numpy(self.labels[index]),
            "index": index,
        }


class ImageFolderDataset(Dataset):
    """Unlabelled images for `predict` and `carzero zeroshot`.

    Args:
        image_paths: the image files (e.g. `MedzooDataModule.predict_files()`).
        transform: PIL image -> tensor.
        root: the folder the files were found under; `name` is the path relative to it (default: the file
            name).

    Items: {"image": (3, H, W) float, "index": int, "name": str, "path": str}.
    """

    def __init__(self, image_paths: Sequence[Path], transform: Callable, root: Path | None = None) -> None:
        self.image_paths = [Path(p) for p in image_paths]
        self.transform = transform
        self.root = None if root is None else Path(root)

    def name(self, index: int) -> str:
        path = self.image_paths[index]
        if self.root is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return path.name

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.image_paths[index]
        return {
            "image": self.transform(read_cxr(path)),
            "index": index,
            "name": self.name(index),
            "path": str(path),
        }


# ----------------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------------


def batch_size_for_epoch(schedule: dict[int, int], epoch: int) -> int:
    """The batch size of `epoch` from {first_epoch: batch_size}, e.g. {0: 64, 2: 128, 6: 256}."""
    starts = sorted(int(k) for k in schedule if int(k) <= epoch)
    if not starts:
        raise MedzooDataError("batch_size_schedule", repr(schedule), "an entry for epoch 0")
    return int({int(k): v for k, v in schedule.items()}[starts[-1]])


def split_name(value: Any) -> str:
    """A split name from a CSV: `validate` (MIMIC-CXR's spelling) is read as `val`; others lower-cased."""
    name = str(value).strip().lower()
    return "val" if name == "validate" else name


class CARZeroDataModule(MedzooDataModule):
    """MIMIC-CXR-style image-report pairs for training and labelled images for zero-shot evaluation.

    The CSV (`root/csv`) has one row per image: `image_column` (path relative to `root`), `split_column`
    (`train`, `val` or `test`; MIMIC-CXR's `validate` is read as `val`), `view_column` (PA, AP, LATERAL, ...),
    the report `text_columns` (e.g. the impression and the LLM-aligned report from `carzero align-reports`),
    and optionally one 0/1 column per finding in `class_names` (used for the zero-shot validation AUROC, the
    checkpoint monitor). Only frontal views are used.

    Args:
        root: dataset folder; None = the demo's synthetic set (`medzoo.synthetic.make_cxr_dataset`, written on
            first use under `$MEDZOO_CACHE/carzero/cxr-n<images>-<H>x<W>-seed<seed>/`, see `demo_dir()`).
        csv: the CSV file name inside `root`.
        text_columns: report columns whose sentences form each image's sentence pool; missing columns
            are an error, empty cells are skipped.
        class_names: finding columns for zero-shot validation/testing (None: no zero-shot metrics; then set
            `--checkpoint.monitor val/loss --checkpoint.mode min`); `predict` scores these findings.
        batch_size: validation/test/predict batch size, and training batch size without a schedule.
        batch_size_schedule: {first_epoch: batch_size} for training, e.g. the paper's {0: 64, 2: 128, 6: 256};
            needs ``trainer.reload_dataloaders_every_n_epochs: 1``.
        resize, crop: transform sizes (paper: 256 and 224).
        test_set, test_root: evaluate `carzero test` on an official test set (`carzero.testsets.TEST_SETS`)
            instead of the CSV's test split.
        align_reports: add the column `aligned_report` = `carzero.alignment.rule_based_align` of the first
            text column when the CSV lacks it (the no-LLM path of `carzero align-reports`, run on the fly);
            list `aligned_report` in `text_columns` to train on it. The demo uses it on the synthetic reports.
        findings_first: training pairs draw only from sentences that state a finding when the image has any
            (ours, off in the paper; see `ReportPairDataset`). Validation pairs draw from all sentences.
        augment: the paper's training augmentation (RandomCrop, flip, affine, jitter); False trains on the
            test transform (ours; the demo's 64-px cartoons).
        synthetic_images, synthetic_size: size of the demo's synthetic set (used when `root` is None).
        num_workers, seed: loader workers; the seed of the sentence draws, the training order and the
            synthetic set.
        predict_root: a file or a folder of images for `predict` (searched recursively).
        cache_dir: a preprocessing cache (None = none): the training, validation and test images read and
            resized once (`ResizedImageCache`), so later epochs skip decoding full-size files.
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
        findings_first: bool = False,
        augment: bool = True,
        synthetic_images: int = 160,
        synthetic_size: tuple[int, int] = (128, 128),
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            predict_root=predict_root,
            cache_dir=cache_dir,
        )
        self.csv = csv
        self.image_column = image_column
        self.split_column = split_column
        self.view_column = view_column
        self.text_columns = list(text_columns or ["report"])
        self.class_names = list(class_names) if class_names else []
        self.test_class_names: list[str] = []
        self.frontal_views = list(frontal_views or FRONTAL_VIEWS)
        self.batch_size_schedule = dict(batch_size_schedule) if batch_size_schedule else None
        self.resize = resize
        self.crop = crop
        self.test_set = test_set
        self.test_root = test_root
        self.align_reports = align_reports
        self.findings_first = findings_first
        self.augment = augment
        self.synthetic_images = int(synthetic_images)
        self.synthetic_size = (int(synthetic_size[0]), int(synthetic_size[1]))
        self.datasets: dict[str, Dataset] = {}

    def dataset_root(self) -> Path:
        """The data folder: `root`, or the demo's synthetic set under `demo_dir()` (not written here)."""
        if self.root is not None:
            root = self.root.expanduser()
            if not root.is_dir():
                raise MedzooDataError(
                    f"--data.root {root}", "no such folder", "the dataset folder (see README, Real data)"
                )
            return root
        height, width = self.synthetic_size
        return self.demo_dir() / f"cxr-n{self.synthetic_images}-{height}x{width}-seed{self.seed}"

    def prepare_data(self) -> None:
        root = self.dataset_root()
        if self.root is None and not (root / self.csv).is_file():
            from medzoo.synthetic import make_cxr_dataset

            make_cxr_dataset(root, n_images=self.synthetic_images, size=self.synthetic_size, seed=self.seed)

    def _frame(self, root: Path) -> pd.DataFrame:
        csv_path = root / self.csv
        if not csv_path.is_file():
            raise MedzooDataError(csv_path, "no such file", "the training CSV (--data.csv)")
        frame = pd.read_csv(csv_path)
        if self.align_reports and ALIGNED_COLUMN not in frame:
            from carzero.alignment import rule_based_align

            source = self.text_columns[0]
            require_columns(frame, [source], csv_path)
            frame[ALIGNED_COLUMN] = [
                rule_based_align(text) if isinstance(text, str) and text.strip() else None
                for text in frame[source]
            ]
        needed = [self.image_column, self.split_column, *self.text_columns, *self.class_names]
        require_columns(frame, needed + ([self.view_column] if self.view_column else []), csv_path)
        if self.view_column:
            frame = frame[frame[self.view_column].astype(str).str.upper().isin(self.frontal_views)]
        frame = frame.assign(**{self.split_column: frame[self.split_column].map(split_name)})
        unknown = sorted(set(frame[self.split_column]) - {"train", "val", "test"})
        if unknown:
            raise MedzooDataError(
                f"{csv_path} (column {self.split_column})",
                f"split names {unknown}",
                "train, val/validate, test",
            )
        return frame.reset_index(drop=True)

    def _paths(self, root: Path, frame: pd.DataFrame, csv_path: Path) -> list[Path]:
        paths = [root / str(p) for p in frame[self.image_column]]
        require_images(paths, csv_path)
        return paths

    def _labels(self, part: pd.DataFrame) -> np.ndarray:
        return (part[self.class_names].fillna(0).to_numpy() == 1).astype(np.float32)

    def eval_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return build_transform(False, self.resize, self.crop)

    def reader(self) -> Callable[[Path], Image.Image]:
        """`read_cxr`, or the preprocessing cache in `cache_dir` when one is set."""
        return read_cxr if self.cache_dir is None else ResizedImageCache(self.cache_dir, self.resize)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            return  # predict reads only `predict_root`
        if stage == "test" and self.test_set:
            self._setup_official_test_set()  # needs no training CSV
            return
        root = self.dataset_root()
        frame = self._frame(root)
        csv_path = root / self.csv
        test_tf = self.eval_transform()
        train_tf = build_transform(self.augment, self.resize, self.crop)
        for split, transform in (("train", train_tf), ("val", test_tf)):
            part = frame[frame[self.split_column] == split]
            texts = [
                [t for t in row if isinstance(t, str)] for row in part[self.text_columns].itertuples(False)
            ]
            paths = self._paths(root, part, csv_path)
            self.datasets[split] = ReportPairDataset(
                paths,
                texts,
                transform,
                self.seed,
                where=str(csv_path),
                reader=self.reader(),
                findings_first=self.findings_first and split == "train",
            )
            if self.class_names:
                labels = self._labels(part)
                self.datasets[f"{split}_labels"] = LabelledImageDataset(paths, labels, test_tf, self.reader())
        if stage in ("test", None):
            if self.test_set:
                self._setup_official_test_set()
            elif self.class_names:
                part = frame[frame[self.split_column] == "test"]
                self.test_class_names = self.class_names
                self.datasets["test"] = LabelledImageDataset(
                    self._paths(root, part, csv_path), self._labels(part), test_tf, self.reader()
                )

    def _setup_official_test_set(self) -> None:
        root = self.test_root or self.root
        if root is None:
            raise MedzooDataError(
                "--data.test_root", "not set", f"the folder of the {self.test_set} test set"
            )
        test = load_test_set(self.test_set, root)
        self.test_class_names = test.class_names
        self.datasets["test"] = LabelledImageDataset(
            test.image_paths, test.labels, self.eval_transform(), self.reader()
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
        loaders = [self.eval_loader(self.datasets["val"])]
        if "val_labels" in self.datasets:
            loaders.append(self.eval_loader(self.datasets["val_labels"]))
        return loaders

    def test_dataloader(self):
        if "test" not in self.datasets:
            raise MedzooDataError(
                "data", "no test set", "data.class_names (CSV test split) or data.test_set + data.test_root"
            )
        return self.eval_loader(self.datasets["test"])

    def predict_dataloader(self):
        files = self.predict_files()
        root = self.predict_root if self.predict_root is not None and self.predict_root.is_dir() else None
        return self.eval_loader(ImageFolderDataset(files, self.eval_transform(), root=root))
