"""The landmark Dataset and DataModule (layouts in ``han_landmark.layouts``, geometry and augmentation in
``han_landmark.transforms``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from han_landmark.layouts import (
    CHEST_FLIP_PAIRS,
    LAYOUT_SPACING_MM,
    LAYOUTS,
    LandmarkSample,
    LayoutRequest,
    load_layout,
)
from han_landmark.transforms import (
    AugmentationConfig,
    apply_matrix,
    image_to_unit_float,
    normalize_imagenet,
    place_image,
    random_affine_matrix,
    warp_image,
)
from medzoo.errors import MedzooDataError
from medzoo.io import read_image
from medzoo.lightning import MedzooDataModule

__all__ = ["CHEST_FLIP_PAIRS", "LAYOUTS", "LandmarkDataModule", "LandmarkDataset", "LandmarkSample"]


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
        keep_aspect, padding: how the image is placed into the input (see
            ``han_landmark.transforms.fit_matrix``): stretched (False, 1.0) or aspect-preserving and
            centred with ``padding`` times its size fitting the input (the reference: True, 1.25).
    """

    def __init__(
        self,
        samples: Sequence[LandmarkSample],
        input_size: Sequence[int],
        augmentation: AugmentationConfig | None = None,
        seed: int = 0,
        keep_aspect: bool = False,
        padding: float = 1.0,
    ) -> None:
        self.samples = list(samples)
        self.keep_aspect, self.padding = bool(keep_aspect), float(padding)
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
        if spacing is None:
            spacing = loaded.spacing_xy
        # antialiased resize (and centring), then (training) one affine warp for all geometric augmentation
        image, to_input = place_image(image, self.input_size, self.keep_aspect, self.padding)
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
            "index": index,
        }

    def _augment(
        self, image: torch.Tensor, coords: np.ndarray, visible: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        aug = self.augmentation
        flip = (bool(aug.flip_pairs) or aug.flip_without_pairs) and rng.random() < aug.flip_prob
        matrix = random_affine_matrix(
            rng,
            self.input_size,
            aug.rotation_deg,
            aug.rotation_prob,
            aug.scale_factor,
            aug.translation,
            flip,
            aug.scale_rotation,
        )
        if flip and aug.flip_pairs:
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
        layout: ``"csv"``, ``"isbi2015"``, ``"coco"``, ``"hand"``, ``"normalized_txt"`` or ``"labelme"``
            (``han_landmark.layouts.LAYOUTS``).
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
        annotator: the ground truth: ISBI 2015 ``senior``, ``junior`` or ``mean``; LabelMe: an annotator
            folder name or ``mean`` (with one annotator folder the default picks it).
        annotators: LabelMe annotator folders under ``root`` (default: every sub-folder with JSON files).
        landmark_labels: LabelMe label of each landmark index, e.g. ``["S", "N", "Or", ...]``; default the
            labels ``"0" .. "K-1"``.
        split_dir: folder (under ``root``) of the fixed-split list files ``{train,val,test}.txt`` that the
            csv and labelme layouts use when present (csv also reads a ``split`` column).
        isbi_test_subsets: ISBI 2015 test subsets, e.g. ``["test1"]`` or ``["test1", "test2"]``.
        keep_aspect, padding: placement of the image in the input (see :class:`LandmarkDataset`); the
            reference keeps the aspect ratio with 1.25 padding, ``False, 1.0`` stretches the image.
        augment: augment the training split.
        flip_pairs: left/right landmark pairs, swapped when the image is mirrored.
        flip_without_pairs: mirror with probability ``flip_prob`` even without pairs, keeping the labels
            (the reference's cephalometric setting).
        scale_rotation: ``"normal"`` (the reference: scale clip(N(1, sf)) always, angle clip(N(0, rf),
            +-2 rf) with ``rotation_prob``) or ``"uniform"`` (both uniform, together with
            ``rotation_prob``); see ``han_landmark.transforms.draw_scale_rotation``.
        rotation_deg, rotation_prob, scale_factor, translation, flip_prob, photometric: augmentation.
        synthesize_if_missing, synthetic_images, synthetic_size: the phantom data set to generate.
        batch_size, num_workers, seed: see ``MedzooDataModule``.
        predict_root: an image file or a folder of images (searched recursively) for ``predict``; default
            the test split.
        cache_dir: unused (no preprocessing cache; images are read on the fly).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        layout: Literal["csv", "isbi2015", "coco", "hand", "normalized_txt", "labelme"] = "csv",
        num_landmarks: int = 19,
        input_size: tuple[int, int] = (1216, 1024),
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        annotation_file: str | None = None,
        image_dir: str = "images",
        label_dir: str | None = None,
        spacing: float | None = None,
        annotator: str = "senior",
        isbi_test_subsets: list[str] | None = None,
        annotators: list[str] | None = None,
        landmark_labels: list[str] | None = None,
        split_dir: str = "splits",
        keep_aspect: bool = True,
        padding: float = 1.25,
        augment: bool = True,
        flip_pairs: list[tuple[int, int]] | None = None,
        flip_without_pairs: bool = False,
        scale_rotation: Literal["normal", "uniform"] = "normal",
        rotation_deg: float = 40.0,
        rotation_prob: float = 0.6,
        scale_factor: float = 0.5,
        translation: float = 0.15,
        flip_prob: float = 0.4,
        photometric: bool = True,
        synthesize_if_missing: bool = False,
        synthetic_images: int = 24,
        synthetic_size: tuple[int, int] = (256, 256),
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            predict_root=predict_root,
            cache_dir=cache_dir,
        )
        if layout not in LAYOUTS:
            raise MedzooDataError("data.layout", repr(layout), f"one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.num_landmarks = int(num_landmarks)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.annotation_file = annotation_file
        self.image_dir, self.label_dir = image_dir, label_dir
        self.spacing = spacing
        self.annotator = annotator
        self.isbi_test_subsets = list(isbi_test_subsets or ["test1"])
        self.annotators = None if annotators is None else [str(a) for a in annotators]
        self.landmark_labels = None if landmark_labels is None else [str(label) for label in landmark_labels]
        self.split_dir = split_dir
        if scale_rotation not in ("normal", "uniform"):
            raise MedzooDataError("data.scale_rotation", repr(scale_rotation), "'normal' or 'uniform'")
        if padding < 1.0 or (not keep_aspect and padding != 1.0):
            raise MedzooDataError(
                "data.padding", str(padding), ">= 1, and exactly 1 unless data.keep_aspect is true"
            )
        self.keep_aspect, self.padding = bool(keep_aspect), float(padding)
        self.augmentation = (
            AugmentationConfig(
                rotation_deg=rotation_deg,
                rotation_prob=rotation_prob,
                scale_factor=scale_factor,
                translation=translation,
                flip_prob=flip_prob,
                flip_pairs=tuple((int(a), int(b)) for a, b in (flip_pairs or ())),
                photometric=photometric,
                flip_without_pairs=flip_without_pairs,
                scale_rotation=scale_rotation,
            )
            if augment
            else None
        )
        self.synthesize_if_missing = synthesize_if_missing
        self.synthetic_images = int(synthetic_images)
        self.synthetic_size = (int(synthetic_size[0]), int(synthetic_size[1]))
        self.splits: dict[str, list[LandmarkSample]] = {}

    # -- locating and generating data --------------------------------------------------------------------
    def data_root(self) -> Path:
        """The dataset folder (the cache folder of the phantoms when ``root`` is ``None``)."""
        if self.root is not None:
            return self.root.expanduser()
        if not self.synthesize_if_missing:
            raise MedzooDataError("data.root", "None", "the dataset folder (--data.root DIR)")
        h, w = self.synthetic_size
        name = f"phantoms-k{self.num_landmarks}-n{self.synthetic_images}-{h}x{w}-seed{self.seed}"
        return self.demo_dir() / name

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
    def load_splits(self) -> dict[str, list[LandmarkSample]]:
        """``{"train", "val", "test"}`` -> samples, from the layout's own splits or seeded fractions."""
        request = LayoutRequest(
            root=self.data_root(),
            num_landmarks=self.num_landmarks,
            annotation_file=self.annotation_file,
            image_dir=self.image_dir,
            label_dir=self.label_dir,
            spacing=self.spacing,
            annotator=self.annotator,
            isbi_test_subsets=tuple(self.isbi_test_subsets),
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            landmark_labels=None if self.landmark_labels is None else tuple(self.landmark_labels),
            annotators=None if self.annotators is None else tuple(self.annotators),
            split_dir=self.split_dir,
        )
        return load_layout(self.layout, request)

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
        return LandmarkDataset(
            samples,
            self.input_size,
            self.augmentation if augment else None,
            self.seed,
            keep_aspect=self.keep_aspect,
            padding=self.padding,
        )

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
        if self.predict_root is None:
            return self.eval_loader(self._dataset("test"))
        empty = np.full((self.num_landmarks, 2), np.nan)
        samples = [
            LandmarkSample(p, empty, np.zeros(self.num_landmarks, dtype=bool), self.spacing_pair())
            for p in self.predict_files()
        ]
        dataset = LandmarkDataset(
            samples, self.input_size, keep_aspect=self.keep_aspect, padding=self.padding
        )
        return self.eval_loader(dataset)

    def spacing_pair(self) -> tuple[float, float] | None:
        """(x, y) mm/px of images to predict: ``data.spacing``, else the layout's own (ISBI 2015: 0.1)."""
        spacing = self.spacing if self.spacing is not None else LAYOUT_SPACING_MM.get(self.layout)
        return None if spacing is None else (float(spacing), float(spacing))
