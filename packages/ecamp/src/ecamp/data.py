"""Data for ECAMP: MIMIC-CXR-style image/report/LLM-context pairs for pre-training (with the entity-aware
masking of ``ecamp.text``), and labelled images or masks for fine-tuning. Independent of ``ecamp.models``.
"""

from __future__ import annotations

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
from torchvision.transforms import InterpolationMode

from ecamp.text import EntityAwareMasker, insert_context, load_tokenizer, rule_based_context, train_wordpiece
from medzoo.errors import MedzooDataError
from medzoo.lightning import MedzooDataModule, seeded_split

NORMALIZE_MEAN = 0.4721
NORMALIZE_STD = 0.3037
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------


def read_cxr(path: str | Path) -> Image.Image:
    """Read a chest X-ray (PNG/JPEG/DICOM/...) as an 8-bit greyscale PIL image (non-uint8 min-max scaled)."""
    from medzoo.io import read_grey_uint8

    return Image.fromarray(read_grey_uint8(path))


def check_size(image: Image.Image, minimum: int, where: Path | str) -> Image.Image:
    """Refuse an image whose short side is below ``minimum`` (the SR target would be upsampled data)."""
    if min(image.size) < minimum:
        raise MedzooDataError(
            where,
            f"an image of {image.size[0]}x{image.size[1]} px",
            f"both sides >= {minimum} px (the SR target)",
        )
    return image


def pretrain_transform(size: int, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """ECAMP's pre-training crop: train RandomResizedCrop(size, scale .2-1, bicubic) + hflip; eval Resize +
    CenterCrop; grey -> 3 channels, Normalize(.4721, .3037). Output (3, size, size)."""
    if train:
        steps: list[Any] = [
            T.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    else:
        steps = [T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size)]
    steps += [T.Grayscale(3), T.ToTensor(), T.Normalize([NORMALIZE_MEAN] * 3, [NORMALIZE_STD] * 3)]
    return T.Compose(steps)


def finetune_transform(size: int, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """Fine-tuning images: train RandomResizedCrop(size, scale .6-1) + hflip (not for masks: see the
    segmentation set), eval Resize(size) + CenterCrop; 3 channels, same normalisation -> (3, S, S)."""
    if train:
        steps: list[Any] = [
            T.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    else:
        steps = [T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size)]
    steps += [T.Grayscale(3), T.ToTensor(), T.Normalize([NORMALIZE_MEAN] * 3, [NORMALIZE_STD] * 3)]
    return T.Compose(steps)


# ----------------------------------------------------------------------------------------------------
# Pre-training pairs
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportLayout:
    """Column names of a pre-training CSV."""

    csv: str
    image_column: str
    report_column: str
    context_column: str
    split_column: str | None


PRETRAIN_LAYOUTS: dict[str, ReportLayout] = {
    # The reference's table: mimic-cxr-2.0.0-MRM-entity-llm.csv (img_path, report, llm_output), no split.
    "mimic": ReportLayout("mimic-cxr-2.0.0-MRM-entity-llm.csv", "img_path", "report", "llm_output", None),
    # medzoo's MIMIC-like reports.csv after `ecamp distill-reports` (image, split, report, llm_output).
    "medzoo": ReportLayout("reports_distilled.csv", "image", "report", "llm_output", "split"),
}


def _normalise_split(value: Any) -> str:
    text = str(value).strip().lower()
    return "val" if text in ("validate", "validation", "valid") else text


def read_report_table(root: Path, layout: ReportLayout) -> pd.DataFrame:
    """The pre-training table as columns image (absolute path), report, context, split (train|val|test|"")."""
    path = root / layout.csv
    if not path.is_file():
        raise MedzooDataError(path, "no such file", f"the pre-training CSV of this layout ({layout.csv})")
    table = pd.read_csv(path)
    needed = [layout.image_column, layout.report_column, layout.context_column]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        hint = " (run `ecamp distill-reports` to add llm_output)" if layout.context_column in missing else ""
        raise MedzooDataError(path, f"columns {list(table.columns)}", f"also {missing}{hint}")
    out = pd.DataFrame(
        {
            "image": [str(p if Path(p).is_absolute() else root / p) for p in table[layout.image_column]],
            "report": table[layout.report_column].fillna("").astype(str),
            "context": table[layout.context_column].fillna("").astype(str),
            "split": table[layout.split_column].map(_normalise_split)
            if layout.split_column and layout.split_column in table
            else "",
        }
    )
    empty = out.index[out["report"].str.strip() == ""].tolist()
    if empty:
        raise MedzooDataError(f"{path} (row {empty[0]}, column {layout.report_column})", "an empty report",
                              "report text in every row")  # fmt: skip
    return out


class PretrainDataset(Dataset):
    """Image/report pairs with the LLM context inserted and entity-aware masking applied.

    Items: ``image`` (3, S, S) high-resolution crop, ``input_ids`` (T,) masked ids, ``labels`` (T,) original
    ids, ``attention_mask`` (T,), ``weights`` (T,) re-balanced MLM weights, ``masked`` (T,) bool, ``entity``
    (T,) bool, ``index``. The text randomness of item ``i`` in epoch ``e`` depends only on ``(seed, e, i)``.

    Args:
        table: rows with image, report, context (see :func:`read_report_table`).
        masker: the :class:`~ecamp.text.EntityAwareMasker`.
        transform: PIL image -> (3, S, S).
        min_size: smallest accepted image side (the SR target size).
        context_probability: chance of inserting the context (.8).
        seed: the text-randomness seed; ``fixed_epoch`` freezes the epoch (validation).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        masker: EntityAwareMasker,
        transform: Callable[[Image.Image], torch.Tensor],
        min_size: int,
        context_probability: float = 0.8,
        seed: int = 0,
        fixed_epoch: int | None = None,
    ) -> None:
        self.table = table.reset_index(drop=True)
        self.masker, self.transform, self.min_size = masker, transform, int(min_size)
        self.context_probability, self.seed = context_probability, int(seed)
        self.fixed_epoch = fixed_epoch
        self.epoch = 0 if fixed_epoch is None else fixed_epoch

    def set_epoch(self, epoch: int) -> None:
        if self.fixed_epoch is None:
            self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.table)

    def text(self, index: int, rng: np.random.Generator) -> str:
        row = self.table.iloc[index]
        return insert_context(row["report"], row["context"], rng, self.context_probability)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.table.iloc[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        report = self.masker(self.text(index, rng), rng)
        image = check_size(read_cxr(row["image"]), self.min_size, row["image"])
        return {
            "image": self.transform(image),
            "input_ids": torch.tensor(report.masked_ids),
            "labels": torch.tensor(report.ids),
            "attention_mask": torch.tensor(report.attention),
            "weights": torch.tensor(report.weights, dtype=torch.float32),
            "masked": torch.tensor(report.masked),
            "entity": torch.tensor(report.entity),
            "index": index,
        }


DEMO_SETTINGS: dict[str, Any] = {"n_images": 200, "size": 160, "seed": 0}
# make_cxr_dataset's opt-in generator options and their defaults (the default images and reports)
GENERATOR_DEFAULTS: dict[str, Any] = {"finding_contrast": 1.0, "report_style": "default"}


def demo_folder_name(prefix: str, settings: dict[str, Any]) -> str:
    """The demo folder of given settings, e.g. ``demo-n200-s160-seed0`` (other settings, other folder); a
    non-default generator option adds itself, e.g. ``demo-n200-s160-seed0-contrast0.2-entity_only``."""
    name = f"{prefix}-n{settings['n_images']}-s{settings['size']}-seed{settings['seed']}"
    options = {**GENERATOR_DEFAULTS, **{k: v for k, v in settings.items() if k in GENERATOR_DEFAULTS}}
    if float(options["finding_contrast"]) != GENERATOR_DEFAULTS["finding_contrast"]:
        name += f"-contrast{float(options['finding_contrast']):g}"
    if options["report_style"] != GENERATOR_DEFAULTS["report_style"]:
        name += f"-{options['report_style']}"
    return name


def write_demo_pretraining_set(
    folder: Path,
    n_images: int,
    size: int,
    seed: int,
    finding_contrast: float = 1.0,
    report_style: str = "default",
) -> Path:
    """The demo set: ``medzoo.synthetic.make_cxr_dataset`` (MIMIC-like reports.csv) plus the rule-based
    ``llm_output`` column (what ``ecamp distill-reports`` writes) as reports_distilled.csv."""
    from medzoo.io import write_csv
    from medzoo.synthetic import make_cxr_dataset

    if not (folder / "reports.csv").is_file():
        make_cxr_dataset(
            folder,
            n_images=n_images,
            size=(size, size),
            seed=seed,
            finding_contrast=finding_contrast,
            report_style=report_style,
        )
    target = folder / PRETRAIN_LAYOUTS["medzoo"].csv
    if not target.is_file():
        table = pd.read_csv(folder / "reports.csv")
        table["llm_output"] = [rule_based_context(r) for r in table["report"]]
        write_csv(target, table)
    return folder


class ECAMPDataModule(MedzooDataModule):
    """Pre-training data: a MIMIC-CXR-style CSV of image paths, reports and LLM-distilled entity context.

    The WordPiece tokenizer is trained on the training reports (and contexts) at the first ``setup`` and saved
    to ``tokenizer`` (default ``<root>/ecamp_wordpiece.json``, where the reference keeps its
    ``mimic_wordpiece.json``); later runs load it.

    Args:
        root: dataset folder; None = the demo set under ``$MEDZOO_CACHE/ecamp/demo`` (generated).
        layout: "mimic" (the reference's CSV, no split column: a seeded 98/1/1 split) or "medzoo".
        image_size: the high-resolution crop side (paper 448 = 2 x 224).
        max_length: token sequence length (paper 256).
        vocab_size: WordPiece vocabulary size to train (paper 30000).
        tokenizer: tokenizer JSON path (trained and written when missing).
        context_probability, p_entity, p_other, p_no_entity, context_stops_at_sentence, low_weight: see
            :class:`~ecamp.text.EntityAwareMasker` and :class:`PretrainDataset`.
        val_fraction, test_fraction: split fractions when the CSV has no split column.
        synthetic: demo-set settings (n_images, size, seed; optionally finding_contrast and report_style of
            ``medzoo.synthetic.make_cxr_dataset``).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        layout: str = "medzoo",
        image_size: int = 448,
        max_length: int = 256,
        vocab_size: int = 30000,
        tokenizer: str | Path | None = None,
        context_probability: float = 0.8,
        p_entity: float = 0.75,
        p_other: float = 0.70,
        p_no_entity: float = 0.75,
        context_stops_at_sentence: bool = False,
        low_weight: float = 0.05,
        val_fraction: float = 0.01,
        test_fraction: float = 0.01,
        synthetic: dict[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        if layout not in PRETRAIN_LAYOUTS:
            raise MedzooDataError("--data.layout", repr(layout), f"one of {sorted(PRETRAIN_LAYOUTS)}")
        self.layout = PRETRAIN_LAYOUTS[layout]
        self.image_size, self.max_length, self.vocab_size = int(image_size), int(max_length), int(vocab_size)
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer)
        self.context_probability = context_probability
        self.masking = {
            "p_entity": p_entity,
            "p_other": p_other,
            "p_no_entity": p_no_entity,
            "context_stops_at_sentence": context_stops_at_sentence,
            "low_weight": low_weight,
        }
        self.fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
        self.synthetic = {**DEMO_SETTINGS, **(synthetic or {})}
        self.datasets: dict[str, PretrainDataset] = {}
        self.tokenizer = None

    def data_root(self) -> Path:
        if self.root is not None:
            return self.root
        return write_demo_pretraining_set(
            self.demo_dir() / demo_folder_name("demo", self.synthetic), **self.synthetic
        )

    def split_tables(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        if (table["split"] != "").all():
            return {s: table[table["split"] == s] for s in SPLITS}
        parts = seeded_split(len(table), self.fractions, self.seed)
        return {s: table.iloc[idx] for s, idx in zip(SPLITS, parts, strict=True)}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.data_root()
        tables = self.split_tables(read_report_table(root, self.layout))
        path = self.tokenizer_path or root / "ecamp_wordpiece.json"
        if path.is_file():
            self.tokenizer = load_tokenizer(path)
        else:
            train = tables["train"]
            self.tokenizer = train_wordpiece([*train["report"], *train["context"]], self.vocab_size)
            path.parent.mkdir(parents=True, exist_ok=True)
            from medzoo.io import atomic_path

            with atomic_path(path) as tmp:
                self.tokenizer.save(str(tmp))
        masker = EntityAwareMasker(self.tokenizer, self.max_length, **self.masking)
        for split, table in tables.items():
            train = split == "train"
            self.datasets[split] = PretrainDataset(
                table,
                masker,
                pretrain_transform(self.image_size, train),
                self.image_size,
                self.context_probability,
                self.seed,
                fixed_epoch=None if train else 0,
            )

    def _require(self, split: str) -> PretrainDataset:
        if not len(self.datasets[split]):
            raise MedzooDataError(f"{split} split", "no rows", "at least one image in every split")
        return self.datasets[split]

    def train_dataloader(self):
        dataset = self._require("train")
        dataset.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        return self.train_loader(dataset, drop_last=len(dataset) > self.batch_size)

    def val_dataloader(self):
        return self.eval_loader(self._require("val"))

    def test_dataloader(self):
        return self.eval_loader(self._require("test"))


# ----------------------------------------------------------------------------------------------------
# Fine-tuning: classification
# ----------------------------------------------------------------------------------------------------


@dataclass
class LabelledSet:
    """Images with (N, C) 0/1 labels, per split."""

    class_names: list[str]
    paths: dict[str, list[Path]]
    labels: dict[str, np.ndarray]


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MedzooDataError(path, "no such file", what)
    return path


def _require_columns(table: pd.DataFrame, columns: Sequence[str], where: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MedzooDataError(where, f"columns {list(table.columns)}", f"also the columns {missing}")


def _split_train_val(n: int, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    train, val = seeded_split(n, (1 - val_fraction, val_fraction), seed)
    return train, val


CHESTXRAY14_CLASSES = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
CHEXPERT_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def load_medzoo_labels(root: Path, seed: int, classes: Sequence[str] | None = None) -> LabelledSet:
    """medzoo's MIMIC-like ``reports.csv``: image, split (train|validate|test), one 0/1 column per class."""
    path = _require_file(root / "reports.csv", "a reports.csv with image, split and class columns")
    table = pd.read_csv(path)
    classes = list(classes or CHESTXRAY14_CLASSES)
    _require_columns(table, ["image", "split", *classes], path)
    split = table["split"].map(_normalise_split)
    return LabelledSet(
        classes,
        {s: [root / p for p in table.loc[split == s, "image"]] for s in SPLITS},
        {s: table.loc[split == s, classes].to_numpy(np.float32) for s in SPLITS},
    )


def load_chestxray14(root: Path, seed: int, classes: Sequence[str] | None = None) -> LabelledSet:
    """NIH ChestX-ray14: Data_Entry_2017*.csv[.gz] (also in metadata/), train_val_list.txt / test_list.txt,
    images in images/ or the release's images_*/images/; validation = a seeded 10% of train_val (by image)."""
    patterns = ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz", "metadata/Data_Entry_2017*.csv*")
    tables = [p for pattern in patterns for p in sorted(root.glob(pattern))]
    table_path = _require_file(tables[0] if tables else root / "Data_Entry_2017.csv", "the NIH label table")
    table = pd.read_csv(table_path)
    _require_columns(table, ["Image Index", "Finding Labels"], table_path)
    findings = dict(zip(table["Image Index"], table["Finding Labels"].fillna("").str.split("|"), strict=True))
    folders = sorted(root.glob("images_*/images"))
    index = {p.name: p for folder in folders for p in folder.iterdir()}
    classes = list(classes or CHESTXRAY14_CLASSES)

    def names(list_name: str) -> list[str]:
        text = _require_file(root / list_name, f"the official {list_name}").read_text()
        return [line.strip() for line in text.splitlines() if line.strip()]

    def labels_of(image_names: list[str]) -> np.ndarray:
        unknown = [n for n in image_names if n not in findings]
        if unknown:
            raise MedzooDataError(table_path, f"no row for {unknown[0]}", "a row for every listed image")
        return np.array([[c in findings[n] for c in classes] for n in image_names], np.float32).reshape(
            -1, len(classes)
        )

    train_val, test = names("train_val_list.txt"), names("test_list.txt")
    train_idx, val_idx = _split_train_val(len(train_val), seed, 0.1)
    parts = {"train": [train_val[i] for i in train_idx], "val": [train_val[i] for i in val_idx], "test": test}
    return LabelledSet(
        classes,
        {s: [index.get(n, root / "images" / n) for n in ns] for s, ns in parts.items()},
        {s: labels_of(ns) for s, ns in parts.items()},
    )


def load_chexpert(root: Path, seed: int, classes: Sequence[str] | None = None) -> LabelledSet:
    """CheXpert-v1.0(-small): train.csv and valid.csv with Path (relative to the folder above the release
    folder, or to root) and label columns; uncertain (-1) = positive (U-Ones), blank = negative. The official
    validation set is the test split; validation = a seeded 10% of train."""
    classes = list(classes or CHEXPERT_CLASSES)

    def read(name: str) -> tuple[list[Path], np.ndarray]:
        path = _require_file(root / name, f"CheXpert's {name}")
        table = pd.read_csv(path)
        _require_columns(table, ["Path", *classes], path)
        paths = []
        for relative in table["Path"]:
            candidate = root.parent / relative
            paths.append(candidate if candidate.is_file() else root / relative.split("/", 1)[-1])
        values = table[classes].fillna(0).to_numpy(np.float32)
        return paths, (values != 0).astype(np.float32)

    train_paths, train_labels = read("train.csv")
    test_paths, test_labels = read("valid.csv")
    tr, va = _split_train_val(len(train_paths), seed, 0.1)
    return LabelledSet(
        classes,
        {"train": [train_paths[i] for i in tr], "val": [train_paths[i] for i in va], "test": test_paths},
        {"train": train_labels[tr], "val": train_labels[va], "test": test_labels},
    )


def load_rsna_pneumonia(root: Path, seed: int, classes: Sequence[str] | None = None) -> LabelledSet:
    """RSNA Pneumonia: stage_2_train_labels.csv (patientId, Target; several box rows per patient) and
    stage_2_train_images/<patientId>.dcm; one class "Pneumonia"; a seeded 70/15/15 split by patient."""
    path = _require_file(root / "stage_2_train_labels.csv", "RSNA's stage_2_train_labels.csv")
    table = pd.read_csv(path)
    _require_columns(table, ["patientId", "Target"], path)
    target = table.groupby("patientId", sort=True)["Target"].max()
    ids = target.index.tolist()
    parts = seeded_split(len(ids), (0.7, 0.15, 0.15), seed)
    paths = [root / "stage_2_train_images" / f"{i}.dcm" for i in ids]
    values = target.to_numpy(np.float32)[:, None]
    return LabelledSet(
        ["Pneumonia"],
        {s: [paths[i] for i in p] for s, p in zip(SPLITS, parts, strict=True)},
        {s: values[p] for s, p in zip(SPLITS, parts, strict=True)},
    )


def load_covidx(root: Path, seed: int, classes: Sequence[str] | None = None) -> LabelledSet:
    """COVIDx CXR: train.txt / test.txt rows "patient_id filename label source" (space separated) and the
    images in train/ and test/; classes = the sorted label names (one-vs-rest AUROC); validation = a seeded
    10% of train."""

    def read(split: str) -> tuple[list[Path], list[str]]:
        path = _require_file(root / f"{split}.txt", f"COVIDx's {split}.txt")
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        bad = [r for r in rows if len(r) < 3]
        if bad:
            raise MedzooDataError(path, f"a row {bad[0]}", "rows 'patient_id filename label [source]'")
        return [root / split / r[1] for r in rows], [r[2] for r in rows]

    train_paths, train_names = read("train")
    test_paths, test_names = read("test")
    names = list(classes or sorted(set(train_names) | set(test_names)))

    def one_hot(labels: list[str]) -> np.ndarray:
        return np.array([[n == c for c in names] for n in labels], np.float32).reshape(-1, len(names))

    tr, va = _split_train_val(len(train_paths), seed, 0.1)
    train_labels = one_hot(train_names)
    return LabelledSet(
        names,
        {"train": [train_paths[i] for i in tr], "val": [train_paths[i] for i in va], "test": test_paths},
        {"train": train_labels[tr], "val": train_labels[va], "test": one_hot(test_names)},
    )


CLASSIFICATION_LAYOUTS: dict[str, Callable[..., LabelledSet]] = {
    "medzoo": load_medzoo_labels,
    "chestxray14": load_chestxray14,
    "chexpert": load_chexpert,
    "rsna": load_rsna_pneumonia,
    "covidx": load_covidx,
}


class LabelledImageDataset(Dataset):
    """Items: ``image`` (3, S, S), ``labels`` (C,) float 0/1, ``index``."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, transform: Callable) -> None:
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels, np.float32), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.transform(read_cxr(self.paths[index]).convert("RGB")),
            "labels": torch.from_numpy(self.labels[index]),
            "index": index,
        }


# ----------------------------------------------------------------------------------------------------
# Fine-tuning: segmentation
# ----------------------------------------------------------------------------------------------------


@dataclass
class MaskSet:
    """Images and their binary masks (a mask is a path to a PNG, or an (H, W) uint8 array), per split."""

    paths: dict[str, list[Path]]
    masks: dict[str, list[Any]]


def load_mask_png(root: Path, seed: int) -> MaskSet:
    """``segmentation.csv`` (image, mask, split) with image and mask PNG paths relative to root; mask > 0 is
    foreground. Without a split column: a seeded 70/15/15 split."""
    path = _require_file(root / "segmentation.csv", "a segmentation.csv with image and mask columns")
    table = pd.read_csv(path)
    _require_columns(table, ["image", "mask"], path)
    if "split" in table:
        split = table["split"].map(_normalise_split)
        groups = {s: table[split == s] for s in SPLITS}
    else:
        groups = {
            s: table.iloc[p]
            for s, p in zip(SPLITS, seeded_split(len(table), (0.7, 0.15, 0.15), seed), strict=True)
        }
    return MaskSet(
        {s: [root / p for p in g["image"]] for s, g in groups.items()},
        {s: [root / p for p in g["mask"]] for s, g in groups.items()},
    )


def rle_decode_siim(encoded: str, height: int, width: int) -> np.ndarray:
    """SIIM-ACR's run-length code ("start length" pairs, starts relative to the previous run's end, pixels
    numbered column-major) -> (H, W) uint8 0/1 mask; "-1" is an empty mask."""
    flat = np.zeros(height * width, np.uint8)
    values = [int(v) for v in str(encoded).split()]
    if values and values[0] != -1:
        position = 0
        for start, length in zip(values[0::2], values[1::2], strict=True):
            position += start
            flat[position : position + length] = 1
            position += length
    return flat.reshape(width, height).T


def load_siim(root: Path, seed: int) -> MaskSet:
    """SIIM-ACR Pneumothorax: train-rle.csv (ImageId, EncodedPixels; several rows for several regions) and
    the DICOMs under dicom-images-train/ (any depth, <ImageId>.dcm); a seeded 70/15/15 split by image."""
    path = _require_file(root / "train-rle.csv", "SIIM's train-rle.csv")
    table = pd.read_csv(path)
    table.columns = [c.strip() for c in table.columns]
    _require_columns(table, ["ImageId", "EncodedPixels"], path)
    runs = table.groupby("ImageId", sort=True)["EncodedPixels"].apply(list)
    files = {p.stem: p for p in (root / "dicom-images-train").rglob("*.dcm")}
    ids = [i for i in runs.index if i in files]
    if not ids:
        raise MedzooDataError(root / "dicom-images-train", "none of the listed DICOMs", "<ImageId>.dcm files")
    parts = seeded_split(len(ids), (0.7, 0.15, 0.15), seed)
    return MaskSet(
        {s: [files[ids[i]] for i in p] for s, p in zip(SPLITS, parts, strict=True)},
        {s: [("rle", runs[ids[i]]) for i in p] for s, p in zip(SPLITS, parts, strict=True)},
    )


def load_rsna_boxes(root: Path, seed: int) -> MaskSet:
    """RSNA Pneumonia boxes as masks (ECAMP's RSNA segmentation): stage_2_train_labels.csv (patientId, x, y,
    width, height) and stage_2_train_images/<patientId>.dcm; a seeded 70/15/15 split by patient."""
    path = _require_file(root / "stage_2_train_labels.csv", "RSNA's stage_2_train_labels.csv")
    table = pd.read_csv(path)
    _require_columns(table, ["patientId", "x", "y", "width", "height"], path)
    boxes = table.groupby("patientId", sort=True)[["x", "y", "width", "height"]].apply(
        lambda g: g.dropna().to_numpy().tolist()
    )
    ids = boxes.index.tolist()
    parts = seeded_split(len(ids), (0.7, 0.15, 0.15), seed)
    return MaskSet(
        {
            s: [root / "stage_2_train_images" / f"{ids[i]}.dcm" for i in p]
            for s, p in zip(SPLITS, parts, strict=True)
        },
        {s: [("boxes", boxes[ids[i]]) for i in p] for s, p in zip(SPLITS, parts, strict=True)},
    )


SEGMENTATION_LAYOUTS: dict[str, Callable[[Path, int], MaskSet]] = {
    "mask_png": load_mask_png,
    "siim": load_siim,
    "rsna_boxes": load_rsna_boxes,
}


def _mask_array(spec: Any, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 0/1 mask from a PNG path, ("rle", [codes]) or ("boxes", [[x, y, w, h]]); size = (W, H)."""
    width, height = size
    if isinstance(spec, Path):
        return (np.asarray(read_cxr(spec)) > 0).astype(np.uint8)
    kind, values = spec
    mask = np.zeros((height, width), np.uint8)
    if kind == "rle":
        for code in values:
            mask |= rle_decode_siim(code, height, width)
    else:
        for x, y, w, h in values:
            mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
    return mask


class SegmentationDataset(Dataset):
    """Items: ``image`` (3, S, S), ``mask`` (1, S, S) float 0/1, ``index``. Training flips image and mask
    together; both are resized to S (bilinear image, nearest mask)."""

    def __init__(self, paths: Sequence[Path], masks: Sequence[Any], size: int, train: bool) -> None:
        self.paths, self.masks, self.size, self.train = list(paths), list(masks), int(size), train
        self.normalize = T.Normalize([NORMALIZE_MEAN] * 3, [NORMALIZE_STD] * 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_cxr(self.paths[index])
        mask = Image.fromarray(_mask_array(self.masks[index], image.size) * 255)
        if mask.size != image.size:
            raise MedzooDataError(self.paths[index], f"a mask of {mask.size}", f"the image size {image.size}")
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        pixels = torch.from_numpy(np.asarray(image, np.float32) / 255.0)[None].expand(3, -1, -1)
        target = torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))[None]
        if self.train and torch.rand(()) < 0.5:
            pixels, target = pixels.flip(-1), target.flip(-1)
        return {"image": self.normalize(pixels), "mask": target, "index": index}


def write_demo_segmentation_set(folder: Path, n_images: int = 60, size: int = 96, seed: int = 0) -> Path:
    """A synthetic pneumothorax segmentation set in the ``mask_png`` layout: each CXR-like image is drawn
    twice from the same random state, with and without the finding; the mask is where they differ."""
    from medzoo.io import write_csv, write_png
    from medzoo.synthetic import render_cxr

    if (folder / "segmentation.csv").is_file():
        return folder
    rows = []
    for i in range(n_images):
        finding = ["Pneumothorax"] if i % 3 else []
        image = render_cxr(np.random.default_rng([seed, i]), finding, (size, size))
        background = render_cxr(np.random.default_rng([seed, i]), [], (size, size))
        mask = (np.abs(image.astype(np.int16) - background.astype(np.int16)) > 6).astype(np.uint8) * 255
        write_png(folder / "images" / f"{i:04d}.png", image)
        write_png(folder / "masks" / f"{i:04d}.png", mask)
        rows.append({"image": f"images/{i:04d}.png", "mask": f"masks/{i:04d}.png"})
    write_csv(folder / "segmentation.csv", pd.DataFrame(rows))
    return folder


class FinetuneDataModule(MedzooDataModule):
    """Labelled data for fine-tuning: multi-label classification (``task="cls"``) or binary segmentation
    (``task="seg"``).

    Args:
        root: dataset folder; None = the demo (classification: the pre-training demo set's reports.csv
            labels; segmentation: a synthetic pneumothorax mask set), generated under ``$MEDZOO_CACHE/ecamp``.
        task: "cls" or "seg".
        layout: cls: medzoo | chestxray14 | chexpert | rsna | covidx; seg: mask_png | siim | rsna_boxes
            (None = medzoo / mask_png).
        image_size: network input side (paper 224).
        label_fraction: fraction of the training split used (1, 10 or 100 % in the paper), seeded.
        class_names: classification classes (None = the layout's).
        synthetic: demo-set settings.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        task: str = "cls",
        layout: str | None = None,
        image_size: int = 224,
        label_fraction: float = 1.0,
        class_names: list[str] | None = None,
        synthetic: dict[str, Any] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        if task not in ("cls", "seg"):
            raise MedzooDataError("--data.task", repr(task), "'cls' or 'seg'")
        layouts = CLASSIFICATION_LAYOUTS if task == "cls" else SEGMENTATION_LAYOUTS
        layout = layout or ("medzoo" if task == "cls" else "mask_png")
        if layout not in layouts:
            raise MedzooDataError(
                "--data.layout", repr(layout), f"for task {task!r} one of {sorted(layouts)}"
            )
        if not 0 < label_fraction <= 1:
            raise MedzooDataError("--data.label_fraction", repr(label_fraction), "a fraction in (0, 1]")
        self.task, self.layout, self.image_size = task, layout, int(image_size)
        self.label_fraction, self.class_names = float(label_fraction), class_names
        self.synthetic = dict(synthetic or {})
        self.datasets: dict[str, Dataset] = {}

    def data_root(self) -> Path:
        if self.root is not None:
            return self.root
        if self.task == "cls":
            settings = {**DEMO_SETTINGS, **self.synthetic}
            return write_demo_pretraining_set(
                self.demo_dir() / demo_folder_name("demo", settings), **settings
            )
        # the mask set has its own size settings; the classification set's generator options do not apply
        settings = {"n_images": 60, "size": 96, "seed": 0}
        settings.update({k: v for k, v in self.synthetic.items() if k in settings})
        return write_demo_segmentation_set(
            self.demo_dir() / demo_folder_name("demo-seg", settings), **settings
        )

    def _fraction(self, n: int) -> np.ndarray:
        if self.label_fraction >= 1:
            return np.arange(n)
        return seeded_split(n, (self.label_fraction,), self.seed)[0]

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.datasets["predict"] = ImageFileDataset(self.predict_files(), self.image_size)
            return
        if self.datasets:
            return
        root = self.data_root()
        if self.task == "cls":
            data = CLASSIFICATION_LAYOUTS[self.layout](root, self.seed, self.class_names)
            self.class_names = data.class_names
            keep = self._fraction(len(data.paths["train"]))
            data.paths["train"] = [data.paths["train"][i] for i in keep]
            data.labels["train"] = data.labels["train"][keep]
            for split in SPLITS:
                transform = finetune_transform(self.image_size, split == "train")
                self.datasets[split] = LabelledImageDataset(data.paths[split], data.labels[split], transform)
        else:
            masks = SEGMENTATION_LAYOUTS[self.layout](root, self.seed)
            keep = self._fraction(len(masks.paths["train"]))
            masks.paths["train"] = [masks.paths["train"][i] for i in keep]
            masks.masks["train"] = [masks.masks["train"][i] for i in keep]
            for split in SPLITS:
                self.datasets[split] = SegmentationDataset(
                    masks.paths[split], masks.masks[split], self.image_size, split == "train"
                )

    def _require(self, split: str) -> Dataset:
        if not len(self.datasets[split]):
            raise MedzooDataError(f"{split} split", "no images", "at least one image in every split")
        return self.datasets[split]

    def train_dataloader(self):
        dataset = self._require("train")
        return self.train_loader(dataset, drop_last=len(dataset) > self.batch_size)

    def val_dataloader(self):
        return self.eval_loader(self._require("val"))

    def test_dataloader(self):
        return self.eval_loader(self._require("test"))

    def predict_dataloader(self):
        if "predict" not in self.datasets:
            self.datasets["predict"] = ImageFileDataset(self.predict_files(), self.image_size)
        return self.eval_loader(self.datasets["predict"])


class ImageFileDataset(Dataset):
    """Images to predict: ``image`` (3, S, S), ``path`` (str), ``size`` (H, W) of the original, ``index``."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), int(size)
        self.normalize = T.Normalize([NORMALIZE_MEAN] * 3, [NORMALIZE_STD] * 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_cxr(self.paths[index])
        resized = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, np.float32) / 255.0)[None].expand(3, -1, -1)
        return {
            "image": self.normalize(pixels),
            "path": str(self.paths[index]),
            "size": torch.tensor([image.size[1], image.size[0]]),
            "index": index,
        }
