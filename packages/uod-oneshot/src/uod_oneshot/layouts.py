"""The on-disk layouts of UOD's three domains (and the demo's), each read into train/test samples.

Coordinates: ``(x, y) = (column, row)`` float pixels of the ORIGINAL image, pixel centres at integers.

Layouts (``DomainSpec.layout``), each a function in ``LAYOUTS``:

- ``"csv"``: ``root/images/*`` + ``root/landmarks.csv`` (``image, x0, y0, ...``), as written by
  ``medzoo.synthetic.make_landmark_phantoms``; seeded train/test split by ``test_fraction``.
- ``"isbi2015"``: ``root/RawImage/{TrainingData,Test1Data}/*.bmp`` + ``root/AnnotationsByMD/400_senior/*.txt``
  (19 landmarks, 0.1 mm/px); train = TrainingData (150), test = Test1Data (150).
- ``"hand"``: ``root/all.csv`` (``id, x0, y0, ..., x36, y36``, header optional) + ``root/images/<id>.<ext>``;
  the first 609 rows (in CSV order) train, the rest (300) test; mm/px = 50 mm / |landmark 0 - landmark 4|.
- ``"jsrt"``: ``root/images/JPC*.png`` (any image suffix) + ``root/landmarks/<stem>.pfs`` (SCR lung
  contours): 6 landmarks = right lung points 0, 21, 29 and left lung points 0, 21, 27, coordinates x2 (the
  SCR points are on the 1024 px grid, the images 2048 px); 0.175 mm/px; test = the last 20 % of the JPCNN
  and the last JPCLN images, 50 in all (the reference's split).
- ``"normalized_txt"``: ``root/images/*`` + ``root/<label_dir>/<stem>.txt`` (line 1 = K, then ``x y`` in
  [0, 1]), as ../shared/data/chest-shenzhen; seeded split by ``test_fraction``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.io import (
    IMAGE_SUFFIXES,
    list_images,
    read_isbi_txt,
    read_landmark_csv,
    read_normalized_txt,
)
from medzoo.lightning import seeded_split

__all__ = [
    "LAYOUTS",
    "LandmarkSample",
    "LayoutRequest",
    "hand_spacing",
    "load_layout",
    "read_scr_landmarks",
]

ISBI2015_SPACING_MM = 0.1
JSRT_SPACING_MM = 0.175
HAND_WRIST_WIDTH_MM = 50.0
HAND_TRAIN_IMAGES = 609
JSRT_TEST_IMAGES = 50
SCR_POINTS = {"right lung": (44, (0, 21, 29)), "left lung": (50, (0, 21, 27))}
"""SCR contour: number of points and the indices UOD takes as landmarks."""


@dataclass(frozen=True)
class LandmarkSample:
    """One image with its landmarks.

    Attributes:
        image: the image file.
        coords: (K, 2) float64 (x, y) ORIGINAL pixels (NaN where unknown, e.g. unlabelled images).
        spacing: (x, y) mm/px or ``None`` when unknown.
    """

    image: Path
    coords: np.ndarray
    spacing: tuple[float, float] | None = None


@dataclass(frozen=True)
class LayoutRequest:
    """What a layout needs: the domain's folder and settings (from ``DomainSpec``)."""

    root: Path
    num_landmarks: int
    annotation_file: str | None = None
    image_dir: str = "images"
    label_dir: str | None = None
    spacing: float | None = None
    test_fraction: float = 0.2
    seed: int = 0


Splits = dict[str, list[LandmarkSample]]


def _sample(image: Path, coords: np.ndarray, spacing: float | None) -> LandmarkSample:
    return LandmarkSample(
        image, np.asarray(coords, dtype=np.float64), None if spacing is None else (spacing, spacing)
    )


def _check_count(where: object, coords: np.ndarray, num_landmarks: int) -> np.ndarray:
    if coords.shape != (num_landmarks, 2):
        raise MedzooDataError(
            where, f"{coords.shape[0]} landmarks", f"{num_landmarks} (the domain's num_landmarks)"
        )
    return coords


def _find_image(folder: Path, stem: str) -> Path:
    for candidate in [folder / stem] + [folder / f"{stem}{s}" for s in IMAGE_SUFFIXES]:
        if candidate.is_file():
            return candidate
    raise MedzooDataError(
        folder / stem, "no such image file", f"an image named {stem}[{'|'.join(IMAGE_SUFFIXES)}]"
    )


def _fraction_split(samples: list[LandmarkSample], request: LayoutRequest) -> Splits:
    train, test = seeded_split(
        len(samples), (1.0 - request.test_fraction, request.test_fraction), request.seed
    )
    return {"train": [samples[i] for i in train], "test": [samples[i] for i in test]}


def _csv(request: LayoutRequest) -> Splits:
    path = request.root / (request.annotation_file or "landmarks.csv")
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a landmark CSV (image, x0, y0, ...)")
    table = read_landmark_csv(path)
    samples = [
        _sample(
            _find_image(request.root / request.image_dir, name),
            _check_count(f"{path} [{name}]", coords, request.num_landmarks),
            request.spacing,
        )
        for name, coords in table.items()
    ]
    return _fraction_split(samples, request)


def _isbi2015(request: LayoutRequest) -> Splits:
    spacing = request.spacing or ISBI2015_SPACING_MM
    splits: Splits = {}
    for split, folder in (("train", "TrainingData"), ("test", "Test1Data")):
        samples = []
        for image in list_images(request.root / "RawImage" / folder):
            txt = request.root / "AnnotationsByMD" / "400_senior" / f"{image.stem}.txt"
            if not txt.is_file():
                raise MedzooDataError(
                    image, f"no annotation {txt}", "one TXT per image in AnnotationsByMD/400_senior"
                )
            samples.append(_sample(image, read_isbi_txt(txt, request.num_landmarks), spacing))
        splits[split] = samples
    return splits


def hand_spacing(coords: np.ndarray, wrist_width_mm: float = HAND_WRIST_WIDTH_MM) -> float:
    """mm/px of a hand radiograph: ``50 mm / |landmark 0 - landmark 4|`` (the images carry no spacing)."""
    width = float(np.linalg.norm(coords[0] - coords[4]))
    if not np.isfinite(width) or width <= 0:
        raise MedzooDataError(
            "hand landmarks 0 and 4", f"distance {width}", "a positive wrist width in pixels"
        )
    return wrist_width_mm / width


def _hand(request: LayoutRequest) -> Splits:
    import pandas as pd

    path = request.root / (request.annotation_file or "all.csv")
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "the hand landmark CSV (id, x0, y0, ..., x36, y36)")
    table = pd.read_csv(path, header=None, dtype=str)
    try:
        float(table.iloc[0, 1])
    except ValueError:
        table = table.iloc[1:]  # a header row
    if table.shape[1] != 1 + 2 * request.num_landmarks:
        raise MedzooDataError(
            path,
            f"{table.shape[1] - 1} coordinate columns",
            f"{2 * request.num_landmarks} (x, y per landmark)",
        )
    samples = []
    for number, row in enumerate(table.itertuples(index=False), start=1):
        try:
            coords = np.asarray(row[1:], dtype=np.float64).reshape(request.num_landmarks, 2)
        except ValueError as err:
            raise MedzooDataError(f"{path}, row {number}", "a non-numeric value", "numbers") from err
        image = _find_image(request.root / request.image_dir, str(row[0]).strip())
        samples.append(_sample(image, coords, request.spacing or hand_spacing(coords)))
    return {"train": samples[:HAND_TRAIN_IMAGES], "test": samples[HAND_TRAIN_IMAGES:]}


def read_scr_landmarks(path: str | os.PathLike) -> np.ndarray:
    """UOD's 6 chest landmarks from an SCR ``.pfs`` contour file, in JSRT (2048 px) pixels.

    The file lists ``[Label=right lung]`` with 44 points and ``[Label=left lung]`` with 50, one ``{x, y},``
    per line after a count line; UOD takes right-lung points 0, 21, 29 and left-lung 0, 21, 27 and doubles
    them (SCR's 1024 px grid -> the 2048 px images).

    Returns:
        (6, 2) float64 (x, y).
    """
    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "an SCR .pfs landmark file")
    lines = path.read_text(errors="replace").splitlines()
    found: dict[str, list[tuple[float, float]]] = {}
    for i, line in enumerate(lines):
        for label, (_, keep) in SCR_POINTS.items():
            if label in line and label not in found:
                points = []
                if i + 2 + max(keep) >= len(lines):
                    raise MedzooDataError(
                        path, f"a truncated {label!r} contour", "44/50 points after the count"
                    )
                for j in keep:
                    text = "".join(c for c in lines[i + 2 + j] if c not in " {}").rstrip(",")
                    try:
                        x, y = (float(v) for v in text.split(","))
                    except (ValueError, IndexError) as err:
                        raise MedzooDataError(
                            f"{path}, line {i + 3 + j}", repr(lines[i + 2 + j]), "'{x, y},'"
                        ) from err
                    points.append((x, y))
                found[label] = points
    missing = [label for label in SCR_POINTS if label not in found]
    if missing:
        raise MedzooDataError(path, f"no contour for {missing}", "the 'right lung' and 'left lung' contours")
    return 2.0 * np.asarray(found["right lung"] + found["left lung"], dtype=np.float64)


def _jsrt(request: LayoutRequest) -> Splits:
    images = list_images(request.root / request.image_dir)
    label_dir = request.root / (request.label_dir or "landmarks")
    spacing = request.spacing or JSRT_SPACING_MM
    nodule_free = [p for p in images if p.name.startswith("JPCNN")]
    nodule = [p for p in images if p.name.startswith("JPCLN")]
    num_test_nn = int(len(nodule_free) * 0.2)
    num_test_ln = JSRT_TEST_IMAGES - num_test_nn
    if len(nodule) <= num_test_ln:
        raise MedzooDataError(
            request.root / request.image_dir, f"{len(nodule)} JPCLN images", f"more than {num_test_ln}"
        )
    order = {
        "train": nodule_free[: len(nodule_free) - num_test_nn] + nodule[:-num_test_ln],
        "test": nodule_free[len(nodule_free) - num_test_nn :] + nodule[-num_test_ln:],
    }
    return {
        split: [_sample(p, read_scr_landmarks(label_dir / f"{p.stem}.pfs"), spacing) for p in paths]
        for split, paths in order.items()
    }


def _normalized_txt(request: LayoutRequest) -> Splits:
    from PIL import Image

    label_dir = request.label_dir
    if label_dir is None:
        found = [d for d in ("labels", "landmarks_all279", "landmarks") if (request.root / d).is_dir()]
        if not found:
            raise MedzooDataError(request.root, "no label folder", "labels/, landmarks_all279/ or landmarks/")
        label_dir = found[0]
    samples = []
    for image in list_images(request.root / request.image_dir):
        txt = request.root / label_dir / f"{image.stem}.txt"
        if not txt.is_file():
            raise MedzooDataError(image, f"no annotation {txt}", "one TXT per image")
        with Image.open(image) as handle:
            width, height = handle.size
        coords = read_normalized_txt(txt, width, height)
        samples.append(_sample(image, _check_count(txt, coords, request.num_landmarks), request.spacing))
    return _fraction_split(samples, request)


LAYOUTS: dict[str, Callable[[LayoutRequest], Splits]] = {
    "csv": _csv,
    "isbi2015": _isbi2015,
    "hand": _hand,
    "jsrt": _jsrt,
    "normalized_txt": _normalized_txt,
}


def load_layout(layout: str, request: LayoutRequest) -> Splits:
    """``{"train", "test"}`` -> samples of one domain; a clear error for a missing folder or layout."""
    if layout not in LAYOUTS:
        raise MedzooDataError("domain layout", repr(layout), f"one of {', '.join(LAYOUTS)}")
    if not request.root.is_dir():
        raise MedzooDataError(request.root, "no such folder", f"the dataset folder of the {layout!r} layout")
    splits = load_layout_unchecked(layout, request)
    for split, samples in splits.items():
        for sample in samples:
            _check_count(f"{split} split ({sample.image})", sample.coords, request.num_landmarks)
    return splits


def load_layout_unchecked(layout: str, request: LayoutRequest) -> Splits:
    return LAYOUTS[layout](request)
