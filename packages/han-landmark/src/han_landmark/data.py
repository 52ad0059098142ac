"""Landmark datasets in their released layouts, invertible resizing, augmentation and the DataModule.

Coordinates follow medzoo's convention everywhere: ``(x, y) = (column, row)`` float pixels with pixel centres
at integers. Every sample carries the 3x3 matrix ``to_input`` that maps ORIGINAL image pixels to network-input
pixels (resize, then augmentation when training), so predictions map back to the original image exactly.

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
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

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
from medzoo.lightning import MedzooDataModule, seeded_split
from medzoo.synthetic import default_cache_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ISBI2015_FOLDERS = {"train": "TrainingData", "test1": "Test1Data", "test2": "Test2Data"}
ISBI2015_SPACING_MM = 0.1
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
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise MedzooDataError(
        folder / stem, "no such image file", f"an image named {stem}[{'|'.join(IMAGE_SUFFIXES)}]"
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


# --------------------------------------------------------------------------------------------- geometry


def resize_matrix(source_hw: Sequence[int], target_hw: Sequence[int]) -> np.ndarray:
    """3x3 matrix from pixel coordinates of a ``source_hw`` image to the same image resized to ``target_hw``.

    Pixel centres are at integers, so a pixel's centre ``x`` maps to ``(x + 0.5) * W'/W - 0.5``: the
    convention of ``torch.nn.functional.interpolate(..., align_corners=False)``.
    """
    scale_y, scale_x = target_hw[0] / source_hw[0], target_hw[1] / source_hw[1]
    return np.array(
        [[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]]
    )


def random_affine_matrix(
    rng: np.random.Generator,
    size_hw: Sequence[int],
    rotation_deg: float = 40.0,
    rotation_prob: float = 0.6,
    scale_factor: float = 0.5,
    translation: float = 0.15,
    flip: bool = False,
) -> np.ndarray:
    """A random similarity transform about the image centre (3x3, input pixels -> augmented pixels).

    Rotation uniform in ``[-rotation_deg, rotation_deg]`` and isotropic scale uniform in
    ``[1 - scale_factor, 1 + scale_factor]``, together with probability ``rotation_prob`` (as the
    reference's ``rot_prob``); translation uniform in ``[-translation, translation]`` of the image size per
    axis; a horizontal flip first when ``flip``.
    """
    height, width = size_hw
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    angle, scale = 0.0, 1.0
    if rng.random() < rotation_prob:
        angle = math.radians(rng.uniform(-rotation_deg, rotation_deg))
        scale = rng.uniform(1.0 - scale_factor, 1.0 + scale_factor)
    tx, ty = rng.uniform(-translation, translation, 2) * (width, height)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    centre_out = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    similarity = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], dtype=np.float64)
    centre_back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]], dtype=np.float64)
    matrix = centre_back @ similarity @ centre_out
    if flip:
        matrix = matrix @ np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    return matrix


def apply_matrix(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Apply a 3x3 (or batched (..., 3, 3)) affine matrix to (..., K, 2) (x, y) coordinates."""
    return coords @ np.swapaxes(matrix[..., :2, :2], -1, -2) + matrix[..., None, :2, 2]


def warp_image(image: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """Resample ``image`` (C, H, W) so that pixel ``p`` of the output shows input pixel ``matrix^-1 p``.

    Bilinear, zeros outside; the output has the input's size.
    """
    _, height, width = image.shape
    inverse = torch.as_tensor(np.linalg.inv(matrix), dtype=torch.float32)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inverse.T  # (H, W, 3) source pixels
    # grid_sample with align_corners=False: normalised = (2 * pixel + 1) / size - 1
    grid = torch.stack([(2 * points[..., 0] + 1) / width - 1, (2 * points[..., 1] + 1) / height - 1], dim=-1)
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[
        0
    ]


def image_to_unit_float(array: np.ndarray) -> torch.Tensor:
    """Image array (H, W) or (H, W, C) -> float tensor (3, H, W) in [0, 1].

    uint8 is divided by 255; other dtypes (16-bit, DICOM float) are min-max scaled per image. Grey images
    are repeated to 3 channels (the network is built for RGB input, as in the paper).
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    else:
        values = array.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    return (
        tensor[None].expand(3, -1, -1).clone() if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    )


def normalize_imagenet(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> ImageNet-standardised."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


# ------------------------------------------------------------------------------------------------ datasets


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation, as in the paper's ISBI 2015 setting.

    ``flip_pairs`` are the left/right landmark pairs; a horizontal flip (probability ``flip_prob``) swaps
    each pair and is only used when pairs are declared (cephalograms declare none).
    """

    rotation_deg: float = 40.0
    rotation_prob: float = 0.6
    scale_factor: float = 0.5
    translation: float = 0.15
    flip_prob: float = 0.4
    flip_pairs: tuple[tuple[int, int], ...] = ()
    photometric: bool = True
    brightness: float = 32 / 255
    contrast: tuple[float, float] = (0.5, 1.5)


class LandmarkDataset(Dataset):
    """Images resized to ``input_size`` (and augmented when ``augmentation`` is given), with landmarks.

    Each item is a dict:

    - ``image``: (3, H, W) float32, ImageNet-standardised; (H, W) = ``input_size``.
    - ``landmarks``: (K, 2) float32 (x, y) in input pixels (0 where not visible).
    - ``visible``: (K,) float32 in {0, 1}: annotated and inside the input after augmentation.
    - ``to_input``: (3, 3) float64, original pixels -> input pixels.
    - ``original_landmarks``: (K, 2) float64 in original pixels (NaN where not annotated).
    - ``spacing``: (2,) float64 (x, y) mm/px, NaN when unknown.
    - ``original_size``: (2,) int64 (H, W); ``path``: str.

    Args:
        samples: the annotated images (or images with all-NaN landmarks for prediction).
        input_size: (H, W) of the network input.
        augmentation: random transforms for training; ``None`` for evaluation.
        seed: base seed of the augmentation; item ``i`` of epoch ``e`` draws from ``(seed, e, i)``, so the
            augmentation is reproducible with any number of workers and after resuming. ``dataset[(e, i)]``
            gives an explicit epoch; ``dataset[i]`` takes it from ``epoch_source.epoch`` (the train
            loader's sampler, which Lightning advances), else 0.
    """

    def __init__(
        self,
        samples: Sequence[LandmarkSample],
        input_size: Sequence[int],
        augmentation: AugmentationConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch_source: Any = None
        if augmentation is not None:
            for a, b in augmentation.flip_pairs:
                num = self.samples[0].coords.shape[0] if self.samples else max(a, b) + 1
                if not (0 <= a < num and 0 <= b < num):
                    raise MedzooDataError("flip_pairs", f"pair ({a}, {b})", f"indices in [0, {num})")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (getattr(self.epoch_source, "epoch", 0), key)
        sample = self.samples[index]
        loaded = read_image(sample.image)
        image = image_to_unit_float(loaded.array)
        original_hw = tuple(image.shape[-2:])
        spacing = sample.spacing
        if spacing is None and loaded.spacing is not None:
            spacing = (loaded.spacing[1], loaded.spacing[0])  # header gives (row, col)
        # antialiased resize, then (training) one affine warp for all geometric augmentation
        image = F.interpolate(image[None], size=self.input_size, mode="bilinear", antialias=True)[0]
        to_input = resize_matrix(original_hw, self.input_size)
        coords = sample.coords.copy()
        visible = sample.visible.copy()
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, int(epoch), int(index)])
            image, augment, coords, visible = self._augment(image, coords, visible, rng)
            to_input = augment @ to_input
        input_coords = apply_matrix(to_input, np.nan_to_num(coords))
        inside = (
            (input_coords[:, 0] > -0.5)
            & (input_coords[:, 0] < self.input_size[1] - 0.5)
            & (input_coords[:, 1] > -0.5)
            & (input_coords[:, 1] < self.input_size[0] - 0.5)
        )
        visible = visible & inside
        return {
            "image": normalize_imagenet(image),
            "landmarks": torch.as_tensor(np.where(visible[:, None], input_coords, 0.0), dtype=torch.float32),
            "visible": torch.as_tensor(visible, dtype=torch.float32),
            "to_input": torch.as_tensor(to_input, dtype=torch.float64),
            "original_landmarks": torch.as_tensor(sample.coords, dtype=torch.float64),
            "spacing": torch.tensor(
                spacing if spacing is not None else (math.nan, math.nan), dtype=torch.float64
            ),
            "original_size": torch.tensor(original_hw, dtype=torch.int64),
            "path": str(sample.image),
        }

    def _augment(
        self, image: torch.Tensor, coords: np.ndarray, visible: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        aug = self.augmentation
        flip = bool(aug.flip_pairs) and rng.random() < aug.flip_prob
        matrix = random_affine_matrix(
            rng, self.input_size, aug.rotation_deg, aug.rotation_prob, aug.scale_factor, aug.translation, flip
        )
        if flip:
            # after mirroring, the landmark called "left" sits where "right" was: swap the labels
            order = np.arange(len(coords))
            for a, b in aug.flip_pairs:
                order[a], order[b] = b, a
            coords, visible = coords[order], visible[order]
        image = warp_image(image, matrix)
        if aug.photometric:
            if rng.random() < 0.5:
                image = image + rng.uniform(-aug.brightness, aug.brightness)
            if rng.random() < 0.5:
                image = image * rng.uniform(*aug.contrast)
            image = image.clamp(0.0, 1.0)
        return image, matrix, coords, visible


# --------------------------------------------------------------------------------------------- DataModule


class LandmarkDataModule(MedzooDataModule):
    """Landmark data in any supported layout, with a validation split for model selection.

    The test split is never used while fitting: the best checkpoint is chosen on ``val``.

    Args:
        root: dataset folder. With ``synthesize_if_missing`` a missing or empty ``root`` (or ``None``: a
            folder in the medzoo cache) is filled with ``medzoo.synthetic`` landmark phantoms first.
        layout: ``"csv"``, ``"isbi2015"``, ``"coco"``, ``"hand"`` or ``"normalized_txt"`` (module docstring).
        num_landmarks: K.
        input_size: (H, W) network input (the paper: (1216, 1024)).
        val_fraction, test_fraction: seeded random split fractions, used where the layout has no split of
            its own (ISBI 2015: val comes out of TrainingData, test is ``isbi_test_subsets``; COCO with
            train/val/test JSON files uses them).
        annotation_file: CSV/JSON file name inside ``root`` (csv: ``landmarks.csv``; hand: ``all.csv``;
            coco: used when no ``train.json``/``test.json`` pair exists).
        image_dir: image subfolder for csv, hand and normalized_txt layouts.
        label_dir: label subfolder of the normalized_txt layout (auto-detected when ``None``).
        spacing: mm per pixel for every image, when the layout has none (ISBI: 0.1 built in).
        annotator: ISBI 2015 ground truth: ``senior``, ``junior`` or ``mean``.
        isbi_test_subsets: ISBI 2015 test subsets, e.g. ``["test1"]`` or ``["test1", "test2"]``.
        augment: augment the training split.
        flip_pairs: left/right landmark pairs; flips happen only when given.
        rotation_deg, rotation_prob, scale_factor, translation, flip_prob, photometric: augmentation.
        predict_images: a folder, an image file, or a list of either, for ``predict``; default the test split.
        synthesize_if_missing, synthetic_images, synthetic_size: the phantom data set to generate.
        batch_size, num_workers, seed: see ``MedzooDataModule``.
    """

    def __init__(
        self,
        root: str | None = None,
        layout: Literal["csv", "isbi2015", "coco", "hand", "normalized_txt"] = "csv",
        num_landmarks: int = 19,
        input_size: tuple[int, int] = (1216, 1024),
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        annotation_file: str | None = None,
        image_dir: str = "images",
        label_dir: str | None = None,
        spacing: float | None = None,
        annotator: Literal["senior", "junior", "mean"] = "senior",
        isbi_test_subsets: list[str] | None = None,
        augment: bool = True,
        flip_pairs: list[tuple[int, int]] | None = None,
        rotation_deg: float = 40.0,
        rotation_prob: float = 0.6,
        scale_factor: float = 0.5,
        translation: float = 0.15,
        flip_prob: float = 0.4,
        photometric: bool = True,
        predict_images: str | list[str] | None = None,
        synthesize_if_missing: bool = False,
        synthetic_images: int = 24,
        synthetic_size: tuple[int, int] = (256, 256),
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.root = root
        self.layout = layout
        self.num_landmarks = int(num_landmarks)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.annotation_file = annotation_file
        self.image_dir, self.label_dir = image_dir, label_dir
        self.spacing = spacing
        self.annotator = annotator
        self.isbi_test_subsets = list(isbi_test_subsets or ["test1"])
        self.augmentation = (
            AugmentationConfig(
                rotation_deg,
                rotation_prob,
                scale_factor,
                translation,
                flip_prob,
                tuple((int(a), int(b)) for a, b in (flip_pairs or ())),
                photometric,
            )
            if augment
            else None
        )
        self.predict_images = predict_images
        self.synthesize_if_missing = synthesize_if_missing
        self.synthetic_images = int(synthetic_images)
        self.synthetic_size = (int(synthetic_size[0]), int(synthetic_size[1]))
        self.splits: dict[str, list[LandmarkSample]] = {}

    # -- locating and generating data --------------------------------------------------------------------
    def data_root(self) -> Path:
        """The dataset folder (the cache folder of the phantoms when ``root`` is ``None``)."""
        if self.root is not None:
            return Path(self.root).expanduser()
        if not self.synthesize_if_missing:
            raise MedzooDataError("data.root", "None", "the dataset folder (--data.root DIR)")
        h, w = self.synthetic_size
        name = f"phantoms-k{self.num_landmarks}-n{self.synthetic_images}-{h}x{w}-seed{self.seed}"
        return default_cache_dir("han-landmark") / name

    def prepare_data(self) -> None:
        root = self.data_root()
        if not self.synthesize_if_missing or (root.is_dir() and any(root.iterdir())):
            return
        from medzoo.synthetic import make_landmark_phantoms

        if self.layout != "csv":
            raise MedzooDataError("data.layout", repr(self.layout), "'csv' when synthesizing phantoms")
        make_landmark_phantoms(
            root,
            n_images=self.synthetic_images,
            num_landmarks=self.num_landmarks,
            size=self.synthetic_size,
            seed=self.seed,
        )

    # -- splits -------------------------------------------------------------------------------------------
    def _fraction_split(self, samples: list[LandmarkSample]) -> dict[str, list[LandmarkSample]]:
        train_fraction = 1.0 - self.val_fraction - self.test_fraction
        parts = seeded_split(len(samples), (train_fraction, self.val_fraction, self.test_fraction), self.seed)
        return {
            name: [samples[i] for i in idx] for name, idx in zip(("train", "val", "test"), parts, strict=True)
        }

    def load_splits(self) -> dict[str, list[LandmarkSample]]:
        """``{"train", "val", "test"}`` -> samples, from the layout's own splits or seeded fractions."""
        root = self.data_root()
        if not root.is_dir():
            raise MedzooDataError(root, "no such folder", f"a {self.layout} dataset (see han_landmark.data)")
        k = self.num_landmarks
        if self.layout == "csv":
            samples = load_csv_layout(
                root, self.annotation_file or "landmarks.csv", self.image_dir, k, self.spacing
            )
            return self._fraction_split(samples)
        if self.layout == "isbi2015":
            spacing = self.spacing or ISBI2015_SPACING_MM
            train = load_isbi2015(root, "train", self.annotator, k, spacing)
            parts = seeded_split(len(train), (1.0 - self.val_fraction, self.val_fraction), self.seed)
            test = [
                s
                for sub in self.isbi_test_subsets
                for s in load_isbi2015(root, sub, self.annotator, k, spacing)
            ]
            return {"train": [train[i] for i in parts[0]], "val": [train[i] for i in parts[1]], "test": test}
        if self.layout == "coco":
            if (root / "train.json").is_file() and (root / "test.json").is_file():
                splits = {"train": load_coco(root / "train.json"), "test": load_coco(root / "test.json")}
                if (root / "val.json").is_file():
                    splits["val"] = load_coco(root / "val.json")
                else:
                    train = splits["train"]
                    parts = seeded_split(len(train), (1.0 - self.val_fraction, self.val_fraction), self.seed)
                    splits["train"], splits["val"] = (
                        [train[i] for i in parts[0]],
                        [train[i] for i in parts[1]],
                    )
                return splits
            return self._fraction_split(load_coco(root / (self.annotation_file or "annotations.json")))
        if self.layout == "hand":
            samples = load_hand_csv(
                root / (self.annotation_file or "all.csv"), root / self.image_dir, k, self.spacing
            )
            return self._fraction_split(samples)
        if self.layout == "normalized_txt":
            samples = load_normalized_txt_layout(root, self.image_dir, self.label_dir, k, self.spacing)
            return self._fraction_split(samples)
        raise MedzooDataError("data.layout", repr(self.layout), "csv, isbi2015, coco, hand or normalized_txt")

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()
            for name, samples in self.splits.items():
                if samples and samples[0].coords.shape[0] != self.num_landmarks:
                    raise MedzooDataError(
                        f"{name} split ({samples[0].image})",
                        f"{samples[0].coords.shape[0]} landmarks",
                        f"data.num_landmarks = {self.num_landmarks}",
                    )

    def _dataset(self, split: str, augment: bool = False) -> LandmarkDataset:
        samples = self.splits.get(split, [])
        if not samples:
            raise MedzooDataError(
                f"{split} split of {self.data_root()}",
                "no images",
                f"at least one (check data.{split}_fraction)",
            )
        return LandmarkDataset(samples, self.input_size, self.augmentation if augment else None, self.seed)

    def train_dataloader(self):
        dataset = self._dataset("train", augment=True)
        loader = self.train_loader(dataset)
        # Lightning sets the sampler's epoch before each epoch; the augmentation reads it from there
        dataset.epoch_source = loader.sampler
        return loader

    def val_dataloader(self):
        return self.eval_loader(self._dataset("val"))

    def test_dataloader(self):
        return self.eval_loader(self._dataset("test"))

    def predict_dataloader(self):
        if self.predict_images is None:
            return self.eval_loader(self._dataset("test"))
        entries = [self.predict_images] if isinstance(self.predict_images, str) else list(self.predict_images)
        paths: list[Path] = []
        for entry in entries:
            path = Path(entry).expanduser()
            if path.is_dir():
                paths.extend(list_images(path))
            elif path.is_file():
                paths.append(path)
            else:
                raise MedzooDataError(path, "no such file or folder", "an image file or a folder of images")
        empty = np.full((self.num_landmarks, 2), np.nan)
        samples = [
            LandmarkSample(p, empty, np.zeros(self.num_landmarks, dtype=bool), self.spacing_pair())
            for p in paths
        ]
        return self.eval_loader(LandmarkDataset(samples, self.input_size))

    def spacing_pair(self) -> tuple[float, float] | None:
        return None if self.spacing is None else (float(self.spacing), float(self.spacing))
