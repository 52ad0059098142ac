"""Landmark annotations in their released layouts, and the registry that turns a layout into splits.

Coordinates follow medzoo's convention everywhere: ``(x, y) = (column, row)`` float pixels with pixel centres
at integers.

Layouts (``LandmarkDataModule.layout``):

- ``"csv"``: ``root/images/*`` + ``root/landmarks.csv`` (columns ``image, x0, y0, ...``), the layout that
  ``medzoo.synthetic.make_landmark_phantoms`` writes.
- ``"isbi2015"``: ``root/RawImage/{TrainingData,Test1Data,Test2Data}/*.bmp`` +
  ``root/AnnotationsByMD/{400_senior,400_junior}/*.txt``; 19 landmarks, 0.1 mm/px.
- ``"coco"``: COCO keypoints JSON with per-image ``pixel_spacing`` (the HYATT-Net reference layout):
  ``root/{train,val,test}.json`` (``val`` optional) or one ``annotation_file``; images under ``root/images``
  or ``root``.
- ``"hand"``: the digital hand atlas CSV (one row per image, ``id, x0, y0, ...``, 37 landmarks, with or
  without header) + ``root/images/<id>.<ext>``; mm/px = 50 mm / |landmark 0 - landmark 4| unless given.
- ``"normalized_txt"``: ``root/images/*.png`` + ``root/<label_dir>/<stem>.txt`` (line 1 = K, then ``x y`` in
  [0, 1]), as ../shared/data/chest-shenzhen (6 lung landmarks).
- ``"labelme"``: one LabelMe JSON per image (point shapes), in ``root/<annotator>/`` per annotator or in
  ``root/`` for one; labels are mapped to landmark indices by ``landmark_labels``; images next to the JSON,
  at its ``imagePath`` or in ``root/images``.

Fixed splits: the ``csv`` and ``labelme`` layouts take a ``split`` column (csv) or split list files
``root/splits/{train,val,test}.txt`` (one image file name or stem per line) instead of seeded fractions;
without a val list, validation is carved from train.

``LAYOUTS`` maps each name to a function ``(LayoutRequest) -> {"train", "val", "test"} -> samples``; a new
layout is one function and one registry entry.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.io import (
    IMAGE_SUFFIXES,
    list_images,
    read_coco_keypoints,
    read_image,
    read_isbi_txt,
    read_landmark_csv,
    read_normalized_txt,
)
from medzoo.lightning import seeded_split

LOGGER = logging.getLogger("han_landmark")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
"""2D MetaImage/NRRD files, which ``medzoo.io.read_image`` reads but ``list_images`` leaves out."""
SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}
ISBI2015_FOLDERS = {"train": "TrainingData", "test1": "Test1Data", "test2": "Test2Data"}
ISBI2015_SPACING_MM = 0.1
LAYOUT_SPACING_MM = {"isbi2015": ISBI2015_SPACING_MM}
"""The pixel spacing a layout implies for every image (used by ``predict`` on new images of that layout)."""
HAND_WRIST_WIDTH_MM = 50.0
CHEST_FLIP_PAIRS = ((0, 3), (1, 4), (2, 5))
"""Left/right pairs of the 6-landmark chest layout (apex, costophrenic angle, medial base per lung)."""


@dataclass(frozen=True)
class LandmarkSample:
    """One annotated image.

    Attributes:
        image: path of the image file.
        coords: (K, 2) float64 (x, y) pixels of the ORIGINAL image; NaN where not annotated.
        visible: (K,) bool, True where annotated.
        spacing: (x, y) mm per pixel, or ``None`` when unknown (then the image header is tried).
    """

    image: Path
    coords: np.ndarray
    visible: np.ndarray
    spacing: tuple[float, float] | None = None


def _sample(image: Path, coords: np.ndarray, spacing: float | tuple[float, float] | None) -> LandmarkSample:
    coords = np.asarray(coords, dtype=np.float64)
    if spacing is not None and np.isscalar(spacing):
        spacing = (float(spacing), float(spacing))
    return LandmarkSample(image, coords, np.isfinite(coords).all(axis=1), spacing)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MedzooDataError(path, "no such file", what)
    return path


def _find_image(folder: Path, stem: str) -> Path:
    """``folder/stem`` if it exists, else ``folder/stem.<ext>`` for a known image suffix."""
    direct = folder / stem
    if direct.is_file():
        return direct
    for suffix in (*IMAGE_SUFFIXES, *ITK_SUFFIXES):
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise MedzooDataError(
        folder / stem,
        "no such image file",
        f"an image named {stem}[{'|'.join((*IMAGE_SUFFIXES, *ITK_SUFFIXES))}]",
    )


# ---------------------------------------------------------------------------------------------------- loaders


def load_csv_layout(
    root: str | os.PathLike,
    annotation_file: str = "landmarks.csv",
    image_dir: str = "images",
    num_landmarks: int | None = None,
    spacing: float | None = None,
) -> list[LandmarkSample]:
    """``root/images/<image>`` + ``root/landmarks.csv`` (``image, x0, y0, ...`` pixels), in CSV order."""
    root = Path(root)
    table = read_landmark_csv(root / annotation_file, num_landmarks)
    return [
        _sample(
            _require_file(root / image_dir / name, f"the image listed in {root / annotation_file}"),
            c,
            spacing,
        )
        for name, c in table.items()
    ]


def load_isbi2015(
    root: str | os.PathLike,
    subset: Literal["train", "test1", "test2"] = "train",
    annotator: Literal["senior", "junior", "mean"] = "senior",
    num_landmarks: int = 19,
    spacing: float = ISBI2015_SPACING_MM,
) -> list[LandmarkSample]:
    """The ISBI 2015 cephalometric challenge as released.

    Args:
        root: folder holding ``RawImage/`` and ``AnnotationsByMD/``.
        subset: ``train`` (150), ``test1`` (150) or ``test2`` (100 images).
        annotator: ground truth from the senior or junior doctor, or the mean of both.
        num_landmarks: landmarks per TXT file to read (19; later lines are ignored).
        spacing: mm per pixel (0.1 for the challenge images).
    """
    root = Path(root)
    if subset not in ISBI2015_FOLDERS:
        raise MedzooDataError("subset", repr(subset), f"one of {sorted(ISBI2015_FOLDERS)}")
    if annotator not in ("senior", "junior", "mean"):
        raise MedzooDataError("annotator", repr(annotator), "'senior', 'junior' or 'mean'")
    images = list_images(root / "RawImage" / ISBI2015_FOLDERS[subset])
    doctors = ("senior", "junior") if annotator == "mean" else (annotator,)
    samples = []
    for image in images:
        coords = []
        for doctor in doctors:
            txt = root / "AnnotationsByMD" / f"400_{doctor}" / f"{image.stem}.txt"
            if not txt.is_file():
                raise MedzooDataError(image, f"no annotation {txt}", "one TXT per image in AnnotationsByMD")
            coords.append(read_isbi_txt(txt, num_landmarks))
        samples.append(_sample(image, np.mean(coords, axis=0), spacing))
    return samples


def load_coco(
    annotation_file: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> list[LandmarkSample]:
    """COCO keypoints JSON (``keypoints`` ``[x, y, v] * K``; per-image ``pixel_spacing`` in mm/px).

    Image files are looked up as ``image_root/file_name``; by default ``image_root`` is the JSON's folder
    or its ``images/`` subfolder, whichever holds the first image.
    """
    annotation_file = Path(annotation_file)
    records = read_coco_keypoints(annotation_file)
    if image_root is None:
        candidates = [annotation_file.parent, annotation_file.parent / "images"]
        first = records[0].image if records else ""
        image_root = next((c for c in candidates if (c / first).is_file()), candidates[0])
    image_root = Path(image_root)
    return [
        LandmarkSample(
            _require_file(image_root / r.image, f"the image named in {annotation_file}"),
            np.asarray(r.coords, dtype=np.float64),
            np.asarray(r.visible, dtype=bool),
            None if r.spacing is None else (r.spacing, r.spacing),
        )
        for r in records
    ]


def hand_spacing(coords: np.ndarray, wrist_width_mm: float = HAND_WRIST_WIDTH_MM) -> float:
    """mm per pixel of a hand radiograph from its wrist width: ``50 mm / |landmark 0 - landmark 4|``.

    This is the usual physical normalisation of the digital hand atlas, whose images carry no spacing.
    """
    width_px = float(np.linalg.norm(coords[0] - coords[4]))
    if not np.isfinite(width_px) or width_px <= 0:
        raise MedzooDataError("hand landmarks 0 and 4", f"distance {width_px}", "a positive wrist width")
    return wrist_width_mm / width_px


def load_hand_csv(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    num_landmarks: int = 37,
    spacing: float | None = None,
    wrist_width_mm: float = HAND_WRIST_WIDTH_MM,
) -> list[LandmarkSample]:
    """Digital hand atlas landmarks: one CSV row per image, ``id, x0, y0, ..., x36, y36`` (pixels).

    A header row is optional; ``id`` is the image file name with or without its suffix. Without ``spacing``
    the mm/px of each image is :func:`hand_spacing`.
    """
    import pandas as pd

    annotation_file = Path(annotation_file)
    try:
        table = pd.read_csv(annotation_file, header=None, dtype=str)
    except FileNotFoundError as err:
        raise MedzooDataError(annotation_file, "no such file", "a hand landmark CSV") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise MedzooDataError(annotation_file, f"an unparsable CSV ({err})", "id, x0, y0, ...") from err
    try:
        float(table.iloc[0, 1])
    except ValueError:
        table = table.iloc[1:]  # a header row
    if table.shape[1] != 1 + 2 * num_landmarks:
        raise MedzooDataError(
            annotation_file,
            f"{table.shape[1] - 1} coordinate columns",
            f"{2 * num_landmarks} ({num_landmarks} x, y)",
        )
    samples = []
    for row_number, row in enumerate(table.itertuples(index=False), start=1):
        try:
            coords = np.asarray(row[1:], dtype=np.float64).reshape(num_landmarks, 2)
        except ValueError as err:
            raise MedzooDataError(
                f"{annotation_file}, row {row_number}", "a non-numeric value", "numbers"
            ) from err
        image = _find_image(Path(image_dir), str(row[0]).strip())
        samples.append(
            _sample(image, coords, spacing if spacing is not None else hand_spacing(coords, wrist_width_mm))
        )
    return samples


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, from the header where Pillow can read it."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.size
    except Exception:
        array = read_image(path).array
        return array.shape[1], array.shape[0]


def load_normalized_txt_layout(
    root: str | os.PathLike,
    image_dir: str = "images",
    label_dir: str | None = None,
    num_landmarks: int | None = 6,
    spacing: float | None = None,
) -> list[LandmarkSample]:
    """Images + one normalised TXT per image (line 1 = K, then ``x y`` in [0, 1]); e.g. chest-shenzhen.

    Args:
        root: dataset folder.
        image_dir: subfolder of the images; every image needs a label file.
        label_dir: subfolder of the TXT files; default the first of ``labels``, ``landmarks_all279``,
            ``landmarks`` that exists.
        num_landmarks: K to expect (6 for the chest layout), ``None`` to accept the file's.
        spacing: mm per pixel when known (the Shenzhen PNGs have none).
    """
    root = Path(root)
    if label_dir is None:
        found = [d for d in ("labels", "landmarks_all279", "landmarks") if (root / d).is_dir()]
        if not found:
            raise MedzooDataError(
                root, "no label folder", "a subfolder labels/, landmarks_all279/ or landmarks/"
            )
        label_dir = found[0]
    samples = []
    for image in list_images(root / image_dir):
        txt = root / label_dir / f"{image.stem}.txt"
        if not txt.is_file():
            raise MedzooDataError(image, f"no annotation {txt}", f"one TXT per image in {root / label_dir}")
        width, height = _image_size(image)
        samples.append(
            _sample(image, read_normalized_txt(txt, width, height, num_landmarks=num_landmarks), spacing)
        )
    return samples


def read_labelme_points(
    path: str | os.PathLike, labels: Sequence[str] | None, num_landmarks: int
) -> tuple[np.ndarray, dict]:
    """The point shapes of one LabelMe JSON as (K, 2) float64 (x, y) pixels, NaN where a label is missing.

    Args:
        path: the JSON file.
        labels: ``labels[k]`` is the LabelMe label of landmark k; ``None`` means the labels are the
            integers ``0 .. K-1``.
        num_landmarks: K.

    Returns:
        the coordinates and the parsed JSON.

    Raises:
        MedzooDataError: unreadable JSON, a point label not in ``labels``, or one label on two points (the
            file and landmark are named; fix the annotation, as nothing tells which point is right).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        shapes = record["shapes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedzooDataError(
            path, f"an unreadable LabelMe file ({err})", "a LabelMe JSON with shapes"
        ) from err
    index = {str(label): k for k, label in enumerate(labels)} if labels is not None else None
    coords = np.full((num_landmarks, 2), np.nan)
    for shape in shapes:
        if shape.get("shape_type", "point") != "point":
            continue  # polygons, boxes ... are not landmarks
        label = str(shape.get("label", "")).strip()
        if index is not None:
            k = index.get(label)
        else:
            k = int(label) if label.isdigit() and int(label) < num_landmarks else None
        if k is None:
            expected = (
                f"one of {list(labels)}" if labels is not None else f"an integer 0..{num_landmarks - 1}"
            )
            raise MedzooDataError(path, f"point label {label!r}", f"{expected} (data.landmark_labels)")
        if np.isfinite(coords[k]).all():
            raise MedzooDataError(path, f"landmark {k} ({label!r}) labelled twice", "one point per landmark")
        try:
            coords[k] = np.asarray(shape["points"][0], dtype=np.float64)[:2]
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise MedzooDataError(path, f"point {label!r} without coordinates", "points [[x, y]]") from err
    return coords, record


def _labelme_image(json_path: Path, record: dict, root: Path, image_dir: str) -> Path:
    """The image of a LabelMe file: its ``imagePath`` next to the JSON, else ``root/<image_dir>``."""
    image_path = str(record.get("imagePath") or "")
    candidates = (
        [json_path.parent / image_path, root / image_dir / Path(image_path).name] if image_path else []
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return _find_image(root / image_dir, json_path.stem)


def load_labelme(
    root: str | os.PathLike,
    num_landmarks: int,
    labels: Sequence[str] | None = None,
    annotators: Sequence[str] | None = None,
    annotator: str | None = None,
    image_dir: str = "images",
    spacing: float | None = None,
) -> list[LandmarkSample]:
    """LabelMe point annotations, one JSON per image, from one annotator or the mean of several.

    Args:
        root: ``root/<annotator>/*.json`` (one folder per annotator) or ``root/*.json`` (one annotator).
        num_landmarks: K.
        labels: LabelMe label of each landmark index (see :func:`read_labelme_points`).
        annotators: the annotator folders; default every sub-folder of ``root`` holding JSON files, or
            ``root`` itself when it holds the JSON files.
        annotator: one of ``annotators``, or ``"mean"`` (the mean of every annotator's point, over those
            who placed it). Needed when there are several annotators.
        image_dir: where images are found when the JSON's ``imagePath`` does not lead to one.
        spacing: mm per pixel, when known.

    Policy: a landmark nobody placed is not annotated (NaN: no loss, left out of the metrics) and is reported
    by file and landmark in one warning; an image JSON missing from an annotator's folder is an error when
    averaging, so that the mean is never silently one annotator's.
    """
    root = Path(root)
    if labels is not None and len(labels) != num_landmarks:
        raise MedzooDataError(
            "data.landmark_labels",
            f"{len(labels)} labels",
            f"one per landmark (data.num_landmarks = {num_landmarks})",
        )
    if annotators is None:
        if any(root.glob("*.json")):
            annotators = ["."]
        else:
            annotators = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))
    if not annotators:
        raise MedzooDataError(root, "no LabelMe JSON files", "root/<annotator>/*.json or root/*.json")
    if annotator in (None, "", "senior") and len(annotators) == 1:
        annotator = annotators[0]  # "senior" is the DataModule default, meant for ISBI 2015
    if annotator != "mean" and annotator not in annotators:
        raise MedzooDataError(
            "data.annotator", repr(annotator), f"one of {list(annotators)} or 'mean' (folders of {root})"
        )
    chosen = list(annotators) if annotator == "mean" else [annotator]
    stems = sorted({p.stem for folder in chosen for p in (root / folder).glob("*.json")})
    samples, missing = [], []
    for stem in stems:
        per_annotator, image = [], None
        for folder in chosen:
            path = root / folder / f"{stem}.json"
            if not path.is_file():
                raise MedzooDataError(
                    path, "no such file", f"a LabelMe file from every annotator of {chosen}"
                )
            coords, record = read_labelme_points(path, labels, num_landmarks)
            per_annotator.append(coords)
            image = image or _labelme_image(path, record, root, image_dir)
            missing.extend(
                f"{path.relative_to(root)}: landmark {k}" for k in np.flatnonzero(np.isnan(coords[:, 0]))
            )
        stack = np.stack(per_annotator)
        placed = np.isfinite(stack[..., 0])
        coords = np.where(placed.any(0)[:, None], np.nansum(np.where(placed[..., None], stack, 0), 0), np.nan)
        coords = coords / np.maximum(placed.sum(0), 1)[:, None]
        samples.append(_sample(image, coords, spacing))
    if missing:
        LOGGER.warning(
            "LabelMe: %d landmark(s) not placed, treated as not annotated: %s",
            len(missing),
            "; ".join(missing),
        )
    return samples


def read_split_lists(folder: Path) -> dict[str, list[str]] | None:
    """``folder/{train,val,test}.txt`` (one image name or stem per line, ``#`` comments) or ``None``."""
    if not (folder / "train.txt").is_file():
        return None
    lists = {}
    for name in ("train", "val", "test"):
        path = folder / f"{name}.txt"
        if path.is_file():
            lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
            lists[name] = [line for line in lines if line]
    return lists


def assign_splits(samples: list[LandmarkSample], assignment: dict[str, str], source: str) -> dict:
    """Samples grouped by ``assignment`` (image file name or stem -> split); unlisted images are left out.

    Raises:
        MedzooDataError: a listed name matches no image, or a split name is not train/val/test.
    """
    by_name = {}
    for sample in samples:
        by_name[sample.image.name] = by_name[sample.image.stem] = sample
    splits: dict[str, list[LandmarkSample]] = {"train": [], "val": [], "test": []}
    used = set()
    for name, split in assignment.items():
        if split not in SPLIT_NAMES:
            raise MedzooDataError(source, f"split {split!r} for {name}", "train, val (or validate) or test")
        if name not in by_name:
            raise MedzooDataError(
                source, f"{name!r}, which names no image", "the file name or stem of an image"
            )
        splits[SPLIT_NAMES[split]].append(by_name[name])
        used.add(by_name[name].image)
    left_out = [s.image.name for s in samples if s.image not in used]
    if left_out:
        LOGGER.warning(
            "%s: %d image(s) in no split, left out: %s", source, len(left_out), ", ".join(left_out)
        )
    return splits


def _fixed_or_fraction_split(
    request: LayoutRequest, samples: list[LandmarkSample], column: dict[str, str] | None = None
) -> Splits:
    """A ``split`` column, else split list files, else seeded fractions; val carved from train if absent."""
    if column is not None:
        splits = assign_splits(samples, column, f"{request.root} split column")
    else:
        lists = read_split_lists(request.root / request.split_dir)
        if lists is None:
            return request.fraction_split(samples)
        assignment = {name: split for split, names in lists.items() for name in names}
        splits = assign_splits(samples, assignment, str(request.root / request.split_dir))
    if not splits["val"] and request.val_fraction > 0:
        splits["train"], splits["val"] = request.hold_out_val(splits["train"])
    return splits


# ------------------------------------------------------------------------------------------------ registry

Splits = dict[str, list[LandmarkSample]]


@dataclass(frozen=True)
class LayoutRequest:
    """What a layout needs to produce the splits (the DataModule's arguments)."""

    root: Path
    num_landmarks: int
    annotation_file: str | None = None
    image_dir: str = "images"
    label_dir: str | None = None
    spacing: float | None = None
    annotator: str = "senior"
    isbi_test_subsets: Sequence[str] = field(default_factory=lambda: ("test1",))
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    landmark_labels: Sequence[str] | None = None
    annotators: Sequence[str] | None = None
    split_dir: str = "splits"

    def fraction_split(self, samples: list[LandmarkSample]) -> Splits:
        """Seeded train/val/test split by ``val_fraction`` and ``test_fraction``."""
        train_fraction = 1.0 - self.val_fraction - self.test_fraction
        parts = seeded_split(len(samples), (train_fraction, self.val_fraction, self.test_fraction), self.seed)
        return {
            name: [samples[i] for i in idx] for name, idx in zip(("train", "val", "test"), parts, strict=True)
        }

    def hold_out_val(self, train: list[LandmarkSample]) -> tuple[list[LandmarkSample], list[LandmarkSample]]:
        """Seeded (train, val) out of a layout's own training split."""
        parts = seeded_split(len(train), (1.0 - self.val_fraction, self.val_fraction), self.seed)
        return [train[i] for i in parts[0]], [train[i] for i in parts[1]]


def _csv_splits(request: LayoutRequest) -> Splits:
    annotation = request.root / (request.annotation_file or "landmarks.csv")
    samples = load_csv_layout(
        request.root, annotation.name, request.image_dir, request.num_landmarks, request.spacing
    )
    import pandas as pd

    header = pd.read_csv(annotation, nrows=0).columns
    column = None
    if "split" in header:
        table = pd.read_csv(annotation, usecols=["image", "split"], dtype=str, keep_default_na=False)
        column = {
            name: value.strip().lower() for name, value in zip(table["image"], table["split"], strict=True)
        }
    return _fixed_or_fraction_split(request, samples, column)


def _labelme_splits(request: LayoutRequest) -> Splits:
    samples = load_labelme(
        request.root,
        request.num_landmarks,
        request.landmark_labels,
        request.annotators,
        request.annotator,
        request.image_dir,
        request.spacing,
    )
    return _fixed_or_fraction_split(request, samples)


def _isbi2015_splits(request: LayoutRequest) -> Splits:
    spacing = request.spacing or ISBI2015_SPACING_MM
    k = request.num_landmarks
    train, val = request.hold_out_val(load_isbi2015(request.root, "train", request.annotator, k, spacing))
    test = [
        s
        for sub in request.isbi_test_subsets
        for s in load_isbi2015(request.root, sub, request.annotator, k, spacing)
    ]
    return {"train": train, "val": val, "test": test}


def _coco_splits(request: LayoutRequest) -> Splits:
    root = request.root
    if (root / "train.json").is_file() and (root / "test.json").is_file():
        splits = {"train": load_coco(root / "train.json"), "test": load_coco(root / "test.json")}
        if (root / "val.json").is_file():
            splits["val"] = load_coco(root / "val.json")
        else:
            splits["train"], splits["val"] = request.hold_out_val(splits["train"])
        return splits
    return request.fraction_split(load_coco(root / (request.annotation_file or "annotations.json")))


def _hand_splits(request: LayoutRequest) -> Splits:
    root = request.root
    samples = load_hand_csv(
        root / (request.annotation_file or "all.csv"),
        root / request.image_dir,
        request.num_landmarks,
        request.spacing,
    )
    return request.fraction_split(samples)


def _normalized_txt_splits(request: LayoutRequest) -> Splits:
    samples = load_normalized_txt_layout(
        request.root, request.image_dir, request.label_dir, request.num_landmarks, request.spacing
    )
    return request.fraction_split(samples)


LAYOUTS: dict[str, Callable[[LayoutRequest], Splits]] = {
    "csv": _csv_splits,
    "isbi2015": _isbi2015_splits,
    "coco": _coco_splits,
    "hand": _hand_splits,
    "normalized_txt": _normalized_txt_splits,
    "labelme": _labelme_splits,
}


def load_layout(layout: str, request: LayoutRequest) -> Splits:
    """``{"train", "val", "test"} -> samples`` of ``request.root`` read in ``layout``."""
    if layout not in LAYOUTS:
        raise MedzooDataError("data.layout", repr(layout), f"one of {', '.join(LAYOUTS)}")
    if not request.root.is_dir():
        raise MedzooDataError(
            request.root, "no such folder", f"a {layout} dataset (see han_landmark.layouts)"
        )
    return LAYOUTS[layout](request)
