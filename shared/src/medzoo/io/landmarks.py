"""Landmark files: ISBI 2015 TXT, one CSV per dataset, normalised TXT and COCO keypoints JSON.

Every reader returns coordinates as float64 (K, 2) arrays of (x, y) = (column, row) in PIXELS of the
image the file annotates, with pixel centres at integer coordinates (``array[round(y), round(x)]``).
Every writer is atomic and writes floats with the shortest text that reads back to the same float64.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.io._checks import require_regular_file
from medzoo.io.atomic import write_csv, write_json, write_text

__all__ = [
    "LandmarkRecord",
    "read_coco_keypoints",
    "read_isbi_txt",
    "read_landmark_csv",
    "read_normalized_txt",
    "write_coco_keypoints",
    "write_isbi_txt",
    "write_landmark_csv",
    "write_normalized_txt",
]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ISBI_LINE = re.compile(rf"^\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$")
_SPACE_LINE = re.compile(rf"^\s*({_NUMBER})\s+({_NUMBER})\s*$")


def _format(value: float) -> str:
    """Shortest round-trip text of a float; integral values without a trailing ``.0`` (ISBI style)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _read_lines(path: Path) -> list[str]:
    require_regular_file(path, "a landmark file")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as err:
        raise MedzooDataError(path, "no such file", "a landmark file") from err
    except (UnicodeDecodeError, OSError) as err:
        raise MedzooDataError(
            path,
            f"an unreadable or binary file ({err})",
            "a UTF-8 text landmark file",
        ) from err


def _check_coords(
    path: str | os.PathLike, coords: np.ndarray, num_landmarks: int | None = None
) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise MedzooDataError(path, f"coordinates of shape {coords.shape}", "(K, 2) (x, y) pixels")
    if num_landmarks is not None and coords.shape[0] != num_landmarks:
        raise MedzooDataError(path, f"{coords.shape[0]} landmarks", f"{num_landmarks} landmarks")
    if not np.isfinite(coords).all():
        raise MedzooDataError(path, "non-finite coordinates", "finite (x, y) pixel coordinates")
    return coords


# ---------------------------------------------------------------------------------------------- ISBI TXT


def read_isbi_txt(path: str | os.PathLike, num_landmarks: int) -> np.ndarray:
    """Read an ISBI 2015 cephalometric TXT: the first K lines are ``x,y`` pixels; later lines are ignored.

    The official files follow the K coordinate lines with other annotations (e.g. classification labels),
    which are ignored. A coordinate line beyond K (the file holds more landmarks than expected) or fewer
    than K coordinate lines is an error.

    Returns:
        (K, 2) float64 (x, y) = (column, row) pixels.
    """
    path = Path(path)
    lines = [line for line in _read_lines(path) if line.strip()]
    coords = []
    for number, line in enumerate(lines[:num_landmarks], start=1):
        match = _ISBI_LINE.match(line)
        if match is None:
            raise MedzooDataError(
                f"{path}, line {number}",
                f"{line.strip()!r} after {len(coords)} landmark(s)",
                f"{num_landmarks} lines of 'x,y' pixel coordinates",
            )
        coords.append((float(match.group(1)), float(match.group(2))))
    if len(coords) < num_landmarks:
        raise MedzooDataError(path, f"{len(coords)} landmark lines", f"{num_landmarks} lines of 'x,y'")
    if len(lines) > num_landmarks and _ISBI_LINE.match(lines[num_landmarks]):
        extra = sum(1 for line in lines[num_landmarks:] if _ISBI_LINE.match(line))
        raise MedzooDataError(
            path,
            f"{num_landmarks + extra} or more 'x,y' lines",
            f"{num_landmarks} landmarks",
        )
    return np.asarray(coords, dtype=np.float64)


def write_isbi_txt(path: str | os.PathLike, coords: np.ndarray) -> Path:
    """Write (K, 2) (x, y) pixels as K lines ``x,y`` (ISBI 2015 layout), atomically."""
    coords = _check_coords(path, coords)
    return write_text(path, "".join(f"{_format(x)},{_format(y)}\n" for x, y in coords))


# --------------------------------------------------------------------------------------------------- CSV


def read_landmark_csv(
    path: str | os.PathLike,
    num_landmarks: int | None = None,
    *,
    image_column: str = "image",
    x_column: str = "x{}",
    y_column: str = "y{}",
) -> dict[str, np.ndarray]:
    """Read one CSV per dataset: a row per image, columns ``image, x0, y0, x1, y1, ...`` (pixels).

    Args:
        path: the CSV file.
        num_landmarks: K to expect; ``None`` takes K from the columns (x0..x{K-1} with matching y).
        image_column: name of the image column.
        x_column, y_column: column name patterns formatted with the landmark index, e.g.
            ``"lm{}_x_px"`` for ../shared/data/chest-shenzhen/cases.csv.

    Returns:
        ``{image: (K, 2) float64 (x, y) pixels}`` in file order.
    """
    import pandas as pd

    path = Path(path)
    require_regular_file(path, "a landmark CSV")
    _check_csv_fields(path)
    try:
        table = pd.read_csv(path, dtype={image_column: str}, keep_default_na=False, na_values=[""])
    except FileNotFoundError as err:
        raise MedzooDataError(path, "no such file", "a landmark CSV") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise MedzooDataError(
            path,
            f"an unparsable CSV ({err})",
            "a CSV with columns image, x0, y0, ...",
        ) from err
    if image_column not in table.columns:
        raise MedzooDataError(path, f"columns {list(table.columns)}", f"a column {image_column!r}")
    found = 0
    while x_column.format(found) in table.columns and y_column.format(found) in table.columns:
        found += 1
    expected = num_landmarks if num_landmarks is not None else found
    if found == 0 or found != expected or (num_landmarks is None and x_column.format(found) in table.columns):
        raise MedzooDataError(
            path,
            f"{found} complete landmark column pairs in {list(table.columns)}",
            f"{expected or 'K >= 1'} pairs {x_column.format(0)}, {y_column.format(0)}, ...",
        )
    if table.empty:
        raise MedzooDataError(path, "a header without data rows", "one row per image")
    names = [c.format(k) for k in range(found) for c in (x_column, y_column)]
    booleans = [
        n
        for n in names
        if table[n].dtype == bool or table[n].astype(str).str.lower().isin(["true", "false"]).any()
    ]
    if booleans:
        raise MedzooDataError(path, f"true/false values in {booleans[:3]}", "numbers in every x/y column")
    try:
        values = table[names].to_numpy(dtype=np.float64).reshape(len(table), found, 2)
    except ValueError as err:
        raise MedzooDataError(
            path,
            f"non-numeric coordinates ({err})",
            "numbers in every x/y column",
        ) from err
    bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)) | table[image_column].isna().to_numpy())
    if bad_rows.size:
        raise MedzooDataError(
            f"{path}, data row {bad_rows[0] + 1}",
            "an empty or non-finite cell",
            "an image name and K finite (x, y)",
        )
    duplicated = table[image_column][table[image_column].duplicated()]
    if len(duplicated):
        raise MedzooDataError(path, f"image {duplicated.iloc[0]!r} listed twice", "one row per image")
    return {name: coords for name, coords in zip(table[image_column], values, strict=True)}


def _check_csv_fields(path: Path) -> None:
    """Every row has as many fields as the header: pandas would otherwise shift a row with one extra
    field into an index column and invent image names."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise MedzooDataError(path, f"an unparsable CSV ({err})", "a UTF-8 CSV") from err
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise MedzooDataError(path, "an empty file", "a CSV with columns image, x0, y0, ...")
    width = len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise MedzooDataError(f"{path}, line {number}", f"{len(row)} fields", f"{width} as in the header")


def write_landmark_csv(path: str | os.PathLike, mapping: Mapping[str, np.ndarray]) -> Path:
    """Write ``{image: (K, 2) pixels}`` as a CSV with columns ``image, x0, y0, ...``, atomically."""
    import pandas as pd

    rows = []
    num_landmarks = None
    for image, coords in mapping.items():
        coords = _check_coords(f"{path} [{image}]", coords, num_landmarks)
        num_landmarks = coords.shape[0]
        rows.append([image, *coords.reshape(-1).tolist()])
    columns = ["image"] + [f"{axis}{k}" for k in range(num_landmarks or 0) for axis in ("x", "y")]
    return write_csv(path, pd.DataFrame(rows, columns=columns))


# ---------------------------------------------------------------------------------------- normalised TXT


def read_normalized_txt(
    path: str | os.PathLike, width: int, height: int, *, num_landmarks: int | None = None
) -> np.ndarray:
    """Read a normalised-coordinate TXT (line 1 = K, then K lines ``x y`` in [0, 1]) as pixels.

    This is the layout of ../shared/data/chest-shenzhen/landmarks_all279 (GU2Net/YOLO chest labels):
    ``x = column / width`` and ``y = row / height``, so pixels are ``(x * width, y * height)``.

    Args:
        width, height: size in pixels of the image the file annotates.
        num_landmarks: K to expect; ``None`` accepts the K on line 1.

    Returns:
        (K, 2) float64 (x, y) pixels.
    """
    path = Path(path)
    lines = [line for line in _read_lines(path) if line.strip()]
    if not lines or not lines[0].strip().isdigit():
        found = repr(lines[0].strip()) if lines else "an empty file"
        raise MedzooDataError(f"{path}, line 1", found, "the landmark count K")
    count = int(lines[0])
    if num_landmarks is not None and count != num_landmarks:
        raise MedzooDataError(path, f"K = {count} on line 1", f"{num_landmarks} landmarks")
    rows = lines[1:]
    if len(rows) != count:
        raise MedzooDataError(path, f"{len(rows)} coordinate lines", f"{count} as declared on line 1")
    coords = []
    for number, line in enumerate(rows, start=2):
        match = _SPACE_LINE.match(line)
        if match is None:
            raise MedzooDataError(f"{path}, line {number}", repr(line.strip()), "'x y' normalised to [0, 1]")
        coords.append((float(match.group(1)), float(match.group(2))))
    normalised = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if ((normalised < 0) | (normalised > 1)).any():
        raise MedzooDataError(path, f"values in [{normalised.min()}, {normalised.max()}]", "values in [0, 1]")
    return normalised * np.array([width, height], dtype=np.float64)


def write_normalized_txt(path: str | os.PathLike, coords: np.ndarray, width: int, height: int) -> Path:
    """Write (K, 2) pixels as a normalised TXT (line 1 = K, then ``x/width y/height``), atomically."""
    coords = _check_coords(path, coords) / np.array([width, height], dtype=np.float64)
    lines = [str(len(coords))] + [f"{_format(x)} {_format(y)}" for x, y in coords]
    return write_text(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ COCO keypoints


@dataclass
class LandmarkRecord:
    """The landmarks of one image, as in one COCO keypoints annotation.

    Attributes:
        image: the image's ``file_name``.
        coords: (K, 2) float64 (x, y) pixels; NaN where the landmark is not annotated (COCO v = 0).
        visible: (K,) bool, True where the landmark is annotated (COCO v = 1 or 2).
        spacing: mm per pixel from the image's ``pixel_spacing``; ``None`` when unknown.
        width, height: image size in pixels when the file gives it.
    """

    image: str
    coords: np.ndarray
    visible: np.ndarray = field(default=None)  # type: ignore[assignment]
    spacing: float | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float64)
        if self.visible is None:
            self.visible = np.isfinite(self.coords).all(axis=1)
        self.visible = np.asarray(self.visible, dtype=bool)


def _spacing_value(where: str, value) -> float | None:
    if value is None:
        return None
    values = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    if values.size not in (1, 2) or not np.isfinite(values).all() or (values <= 0).any():
        raise MedzooDataError(where, f"pixel_spacing {value!r}", "a positive number (mm/px) or [row, col]")
    if values.size == 2 and not np.isclose(values[0], values[1]):
        raise MedzooDataError(where, f"anisotropic pixel_spacing {value!r}", "one isotropic spacing in mm/px")
    return float(values[0])


def read_coco_keypoints(path: str | os.PathLike) -> list[LandmarkRecord]:
    """Read a COCO keypoints JSON with a per-image ``pixel_spacing`` (mm/px) into one record per annotation.

    COCO stores ``keypoints`` as ``[x1, y1, v1, x2, y2, v2, ...]`` with v = 0 not annotated, 1 annotated
    but occluded, 2 annotated and visible. x, y are pixel indices (the same convention as medzoo, so no
    half-pixel shift is applied). Images without annotations produce no record.
    """
    path = Path(path)
    require_regular_file(path, "a COCO keypoints JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise MedzooDataError(path, "no such file", "a COCO keypoints JSON") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedzooDataError(path, f"invalid JSON ({err})", "a COCO keypoints JSON") from err
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        keys = list(data) if isinstance(data, dict) else type(data).__name__
        raise MedzooDataError(path, f"top-level {keys}", "an object with 'images' and 'annotations'")
    try:
        ids = [image["id"] for image in data["images"]]
        images = {image["id"]: image for image in data["images"]}
    except (KeyError, TypeError) as err:
        raise MedzooDataError(f"{path}: images", "an entry without 'id'", "COCO image entries") from err
    if len(images) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise MedzooDataError(f"{path}: images", f"id {duplicate!r} used twice", "unique image ids")
    declared = _declared_keypoint_count(path, data.get("categories"))
    if not isinstance(data["annotations"], list):
        raise MedzooDataError(f"{path}: annotations", type(data["annotations"]).__name__, "a list")
    records = []
    for index, annotation in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise MedzooDataError(
                where,
                f"image_id {annotation.get('image_id')!r}",
                "the id of an entry in 'images'",
            )
        raw = annotation.get("keypoints", [])
        if not isinstance(raw, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw
        ):
            raise MedzooDataError(
                where, f"keypoints {str(raw)[:60]}", "a flat list of numbers [x, y, v, ...]"
            )
        keypoints = np.asarray(raw, dtype=np.float64)
        if keypoints.size == 0 or keypoints.size % 3:
            raise MedzooDataError(where, f"{keypoints.size} keypoint values", "3 per landmark (x, y, v)")
        triples = keypoints.reshape(-1, 3)
        if declared is not None and len(triples) != declared:
            raise MedzooDataError(where, f"{len(triples)} keypoints", f"{declared} as the category declares")
        if records and len(triples) != len(records[0].visible):
            raise MedzooDataError(
                where, f"{len(triples)} keypoints", f"{len(records[0].visible)} as in annotations[0]"
            )
        visible = triples[:, 2] > 0
        coords = np.where(visible[:, None], triples[:, :2], np.nan)
        records.append(
            LandmarkRecord(
                image=str(image.get("file_name", image["id"])),
                coords=coords,
                visible=visible,
                spacing=_spacing_value(f"{path}: images id {image['id']}", image.get("pixel_spacing")),
                width=None if image.get("width") is None else int(image["width"]),
                height=None if image.get("height") is None else int(image["height"]),
            )
        )
    return records


def _declared_keypoint_count(path: Path, categories) -> int | None:
    """The keypoint count the categories declare (``len(keypoints)``), or None when they name none."""
    if not categories:
        return None
    counts = {
        len(c["keypoints"])
        for c in categories
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list)
    }
    if len(counts) > 1:
        raise MedzooDataError(
            f"{path}: categories", f"keypoint lists of lengths {sorted(counts)}", "one length"
        )
    return counts.pop() if counts else None


def write_coco_keypoints(
    path: str | os.PathLike,
    records: Iterable[LandmarkRecord],
    keypoint_names: Sequence[str] | None = None,
    *,
    category: str = "landmarks",
) -> Path:
    """Write records as a COCO keypoints JSON (one image entry per distinct image), atomically.

    Annotated landmarks get v = 2, the others ``0, 0, 0``. Each image gets ``pixel_spacing`` when the
    record has a spacing. Each annotation gets a ``bbox`` around its annotated landmarks (pycocotools
    expects one). ``keypoint_names`` defaults to ``"landmark_0" ... "landmark_{K-1}"``.
    """
    records = list(records)
    num_landmarks = None
    images: dict[str, dict] = {}
    annotations = []
    for record in records:
        coords = np.asarray(record.coords, dtype=np.float64)
        visible = np.asarray(record.visible, dtype=bool)
        where = f"{path} [{record.image}]"
        if num_landmarks is not None and coords.shape[0] != num_landmarks:
            raise MedzooDataError(
                where,
                f"{coords.shape[0]} landmarks",
                f"{num_landmarks} as in the first record",
            )
        num_landmarks = coords.shape[0]
        _check_coords(where, coords[visible])
        if record.image not in images:
            entry: dict = {"id": len(images) + 1, "file_name": record.image}
            if record.width is not None:
                entry["width"] = int(record.width)
            if record.height is not None:
                entry["height"] = int(record.height)
            if record.spacing is not None:
                entry["pixel_spacing"] = float(record.spacing)
            images[record.image] = entry
        keypoints = []
        for (x, y), seen in zip(coords, visible, strict=True):
            keypoints += [float(x), float(y), 2] if seen else [0.0, 0.0, 0]
        shown = coords[visible]
        low, high = (shown.min(axis=0), shown.max(axis=0)) if len(shown) else (np.zeros(2), np.zeros(2))
        box = [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": images[record.image]["id"],
                "category_id": 1,
                "keypoints": keypoints,
                "num_keypoints": int(visible.sum()),
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
        )
    names = [f"landmark_{k}" for k in range(num_landmarks or 0)]
    if keypoint_names is not None:
        names = list(keypoint_names)
    if num_landmarks is not None and len(names) != num_landmarks:
        raise MedzooDataError(path, f"{len(names)} keypoint names", f"{num_landmarks}, one per landmark")
    categories = [{"id": 1, "name": category, "supercategory": category, "keypoints": names, "skeleton": []}]
    coco = {"images": list(images.values()), "annotations": annotations, "categories": categories}
    return write_json(path, coco)
