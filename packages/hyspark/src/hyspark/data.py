"""CT data for HySparK: sources (MSD / nnU-Net ``dataset.json`` or NIfTI folders), MONAI transforms.

Preprocessing (paper): orientation RAS, 1.5 mm isotropic spacing, HU clipped to [-175, 250] and scaled to
[0, 1], crop to the foreground, pad to the crop size, several random crops per volume, flips with p .2/.2/.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai import transforms as mt
from monai.data import Dataset as MonaiDataset
from monai.data import MetaTensor, PersistentDataset, list_data_collate
from torch.utils.data import Dataset

from medzoo.errors import MedzooDataError
from medzoo.io import read_volume
from medzoo.lightning import MedzooDataModule, seeded_split
from medzoo.synthetic import default_cache_dir

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AIR_HU_BELOW = -500.0  # a CT in Hounsfield units shows air (about -1000 HU) somewhere


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _resolve(root: Path, entry: str) -> Path:
    path = Path(entry)
    return path if path.is_absolute() else (root / path).resolve()


def find_cases(root: str | os.PathLike, *, need_labels: bool = False) -> list[dict[str, str]]:
    """List ``{"image": path[, "label": path]}`` cases under ``root``.

    Layouts, in order of preference:
      - ``root/dataset.json`` with a ``training`` list of ``{image, label}`` (MSD, or HySparK's merged list;
        relative paths are relative to ``root``);
      - ``root/imagesTr/*.nii.gz`` (+ ``root/labelsTr``), nnU-Net v2 style
        (``case_0000.nii.gz`` -> ``case.nii.gz``);
      - any folder of ``.nii``/``.nii.gz`` files (searched recursively; images only, for pre-training).
    """
    root = Path(root)
    if not root.is_dir():
        raise MedzooDataError(root, "no such folder", "a folder with dataset.json, imagesTr/ or NIfTI files")
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text()).get("training")
        except (json.JSONDecodeError, AttributeError) as error:
            raise MedzooDataError(
                manifest, f"invalid JSON ({error})", "an MSD/nnU-Net dataset.json"
            ) from None
        if isinstance(entries, list) and entries:
            cases = []
            for i, entry in enumerate(entries):
                image = entry.get("image") if isinstance(entry, dict) else entry
                if not isinstance(image, str):
                    raise MedzooDataError(
                        f"{manifest}: training[{i}]", repr(entry), "{image: path, label: path}"
                    )
                case = {"image": str(_resolve(root, image))}
                if isinstance(entry, dict) and entry.get("label"):
                    case["label"] = str(_resolve(root, entry["label"]))
                cases.append(case)
            return _check_labels(cases, root, need_labels)
    images_dir = root / "imagesTr"
    if images_dir.is_dir():
        cases = []
        for image in sorted(p for p in images_dir.iterdir() if _is_nifti(p)):
            case = {"image": str(image)}
            stem = image.name[: -len(".nii.gz")] if image.name.endswith(".nii.gz") else image.stem
            label_name = stem.removesuffix("_0000") + image.name[len(stem) :]
            label = root / "labelsTr" / label_name
            if label.is_file():
                case["label"] = str(label)
            cases.append(case)
        return _check_labels(cases, root, need_labels)
    cases = [{"image": str(p)} for p in sorted(root.rglob("*")) if p.is_file() and _is_nifti(p)]
    return _check_labels(cases, root, need_labels)


def _check_labels(cases: list[dict[str, str]], root: Path, need_labels: bool) -> list[dict[str, str]]:
    if not cases:
        raise MedzooDataError(root, "no NIfTI volumes", "dataset.json, imagesTr/*.nii.gz or *.nii(.gz) files")
    if need_labels:
        missing = [c["image"] for c in cases if "label" not in c]
        if missing:
            raise MedzooDataError(
                root, f"{len(missing)} images without labels (first: {missing[0]})",
                "a label for every image (dataset.json 'label' entries or labelsTr/)",
            )  # fmt: skip
    return cases


class LoadCTd(mt.MapTransform):
    """Read volumes with ``medzoo.io.read_volume`` into channel-first MetaTensors carrying their affine.

    Raises MedzooDataError for a missing/corrupt/2D file, NaN voxels, a volume thinner than 2 voxels along
    an axis, or (``check_hu``) an image without any voxel below -500 HU (not a CT in Hounsfield units,
    e.g. an MR or an already normalised image).
    """

    def __init__(self, keys: Sequence[str], image_key: str = "image", check_hu: bool = True) -> None:
        super().__init__(keys)
        self.image_key = image_key
        self.check_hu = check_hu

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            volume = read_volume(out[key])
            if volume.array.ndim != 3 or min(volume.array.shape) < 2:
                raise MedzooDataError(
                    volume.path, f"shape {volume.array.shape}", "a 3D volume, >= 2 voxels per axis"
                )
            if key == self.image_key and self.check_hu and float(volume.array.min()) >= AIR_HU_BELOW:
                lo, hi = float(volume.array.min()), float(volume.array.max())
                raise MedzooDataError(
                    volume.path, f"intensities in [{lo:g}, {hi:g}] with no air",
                    f"CT in Hounsfield units (voxels below {AIR_HU_BELOW:g} HU); check_hu=False skips this",
                )  # fmt: skip
            meta = {"filename_or_obj": str(volume.path), "original_affine": volume.affine}
            array = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None]
            out[key] = MetaTensor(
                array, affine=torch.as_tensor(volume.affine, dtype=torch.float64), meta=meta
            )
        return out


def preprocess_transforms(
    keys: Sequence[str] = ("image",),
    spacing: float = 1.5,
    hu_range: tuple[float, float] = (-175.0, 250.0),
    check_hu: bool = True,
) -> list[mt.Transform]:
    """Deterministic part: load, RAS, isotropic ``spacing`` mm, HU window -> [0, 1]. Labels use nearest."""
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    return [
        LoadCTd(keys, check_hu=check_hu),
        mt.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        mt.Spacingd(keys, pixdim=(spacing,) * 3, mode=modes),
        mt.ScaleIntensityRanged(
            "image", a_min=hu_range[0], a_max=hu_range[1], b_min=0.0, b_max=1.0, clip=True
        ),
    ]


def training_transforms(
    keys: Sequence[str] = ("image",),
    crop_size: int = 96,
    crops_per_volume: int = 4,
    flip_prob: tuple[float, float, float] = (0.2, 0.2, 0.1),
    crop_sampling: Literal["posneg", "uniform"] = "posneg",
    crop_pos: float = 1.0,
    crop_neg: float = 0.0,
) -> list[mt.Transform]:
    """Random part: foreground crop, pad to ``crop_size``, crops, flips, then plain tensors.

    ``posneg`` is MONAI's RandCropByPosNegLabeld: a crop is centred on a foreground voxel (the image itself,
    > 0 after the window, in pre-training; the label in fine-tuning) with probability
    ``crop_pos / (crop_pos + crop_neg)``, else on a background voxel. The reference pre-trains with
    ``pos=1, neg=0``: every crop centred on foreground. ``uniform`` draws crop positions uniformly.
    """
    keys = list(keys)
    roi = (crop_size,) * 3
    if crop_sampling == "posneg":
        crop = mt.RandCropByPosNegLabeld(
            keys, label_key="label" if "label" in keys else "image", spatial_size=roi,
            pos=crop_pos, neg=crop_neg,
            num_samples=crops_per_volume, image_key="image", image_threshold=0.0, allow_smaller=False,
        )  # fmt: skip
    elif crop_sampling == "uniform":
        crop = mt.RandSpatialCropSamplesd(keys, roi_size=roi, num_samples=crops_per_volume, random_size=False)
    else:
        raise MedzooDataError("crop_sampling", repr(crop_sampling), "'posneg' or 'uniform'")
    return [
        mt.CropForegroundd(keys, source_key="image", allow_smaller=True),
        mt.SpatialPadd(keys, spatial_size=roi),
        crop,
        *[mt.RandFlipd(keys, prob=p, spatial_axis=axis) for axis, p in enumerate(flip_prob)],
        mt.EnsureTyped(keys, track_meta=False),
    ]


def evaluation_transforms(keys: Sequence[str] = ("image",), crop_size: int = 96) -> list[mt.Transform]:
    """Deterministic crop for pre-training validation: foreground crop, pad, centre crop of ``crop_size``."""
    roi = (crop_size,) * 3
    return [
        mt.CropForegroundd(list(keys), source_key="image", allow_smaller=True),
        mt.SpatialPadd(list(keys), spatial_size=roi),
        mt.CenterSpatialCropd(list(keys), roi_size=roi),
        mt.EnsureTyped(list(keys), track_meta=False),
    ]


def whole_volume_transforms(keys: Sequence[str] = ("image", "label")) -> list[mt.Transform]:
    """Segmentation validation and test: the whole preprocessed volume, cropped to the body (foreground).

    The network then sees it through sliding windows (BTCV protocol), so no crop size applies here.
    """
    return [
        mt.CropForegroundd(list(keys), source_key="image", allow_smaller=True),
        mt.EnsureTyped(list(keys), track_meta=False),
    ]


class CTDataset(Dataset):
    """Lazily loaded, transformed CT cases; MONAI's wrapping of transform errors is undone so that a bad
    input raises its MedzooDataError (naming the file) rather than a deep stack trace.

    ``cache_dir`` caches the deterministic preprocessing on disk (MONAI PersistentDataset).
    """

    def __init__(
        self, cases: list[dict[str, str]], preprocess: list, augment: list, cache_dir: str | None = None
    ) -> None:
        if cache_dir is None:
            self.dataset = MonaiDataset(cases, mt.Compose([*preprocess, *augment]))
        else:
            self.dataset = PersistentDataset(cases, mt.Compose([*preprocess, *augment]), cache_dir=cache_dir)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            item = self.dataset[index]
        except Exception as error:
            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, MedzooDataError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise
        # One evaluation sample per case: its index lets DDP-gathered metrics drop the sampler's padding.
        return {**item, "index": index} if isinstance(item, dict) else item


def make_demo_dataset(root: str | os.PathLike | None = None, n_volumes: int = 6, seed: int = 0) -> Path:
    """Generate (once) the synthetic CT set used by ``--config demo`` and return its root."""
    from medzoo.synthetic import make_ct_dataset

    root = (
        Path(root) if root is not None else default_cache_dir("hyspark") / f"synthetic-ct-{n_volumes}-{seed}"
    )
    if not (root / "dataset.json").is_file():
        make_ct_dataset(root, n_volumes=n_volumes, shape=(64, 64, 64), spacing=(1.5, 1.5, 1.5), seed=seed)
    return root


class CTDataModule(MedzooDataModule):
    """CT volumes for HySparK pre-training (``task="pretrain"``, images only) or segmentation fine-tuning
    (``task="segment"``, image + label).

    Batches: ``{"image": (B, 1, S, S, S) float in [0, 1]}`` (+ ``"label": (B, 1, S, S, S)`` integer-valued
    float) with S = ``crop_size``; a training batch holds ``batch_size * crops_per_volume`` crops.
    Prediction yields one whole preprocessed volume per item with its source path.

    Args:
        root: dataset folder (see :func:`find_cases`). None: a synthetic CT set generated into
            ``$MEDZOO_CACHE/hyspark`` (default ``~/.cache/medzoo/hyspark``; the offline demo).
        task: "pretrain" or "segment".
        batch_size: volumes per step; a step holds ``batch_size * crops_per_volume`` crops (the reference's
            single-GPU command: 4 volumes x 4 crops = 16).
        crop_size, crops_per_volume, spacing, hu_range, flip_prob, crop_sampling: preprocessing (paper
            defaults).
        crop_pos, crop_neg: foreground / background weights of ``posneg`` crops (reference: 1 and 0).
        val_fraction: share of the cases held out for validation (seeded split; at least one case).
        cache_dir: optional PersistentDataset cache of the deterministic preprocessing.
        predict_root: folder or file of volumes for ``predict`` (defaults to the validation cases).
        test_root: a labelled dataset folder (same layouts as ``root``) for ``test``; segmentation only.
        check_hu: reject images that are not in Hounsfield units.
        synthetic_volumes: number of generated volumes when ``root`` is None.
    """

    def __init__(
        self,
        root: str | None = None,
        task: Literal["pretrain", "segment"] = "pretrain",
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        crop_size: int = 96,
        crops_per_volume: int = 4,
        spacing: float = 1.5,
        hu_range: tuple[float, float] = (-175.0, 250.0),
        flip_prob: tuple[float, float, float] = (0.2, 0.2, 0.1),
        crop_sampling: Literal["posneg", "uniform"] = "posneg",
        crop_pos: float = 1.0,
        crop_neg: float = 0.0,
        val_fraction: float = 0.2,
        cache_dir: str | None = None,
        predict_root: str | None = None,
        test_root: str | None = None,
        check_hu: bool = True,
        synthetic_volumes: int = 6,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            predict_root=predict_root,
            cache_dir=cache_dir,
        )
        if task not in ("pretrain", "segment"):
            raise MedzooDataError("data.task", repr(task), "'pretrain' or 'segment'")
        self.root, self.task = root, task
        self.crop_size, self.crops_per_volume = crop_size, crops_per_volume
        self.spacing, self.hu_range, self.flip_prob = spacing, tuple(hu_range), tuple(flip_prob)
        self.crop_sampling, self.val_fraction, self.cache_dir = crop_sampling, val_fraction, cache_dir
        self.predict_root, self.check_hu, self.synthetic_volumes = predict_root, check_hu, synthetic_volumes
        self.test_root = test_root
        if crop_pos < 0 or crop_neg < 0 or crop_pos + crop_neg <= 0:
            raise MedzooDataError(
                "data.crop_pos/crop_neg", f"{crop_pos}/{crop_neg}", "non-negative weights, not both 0"
            )
        self.crop_pos, self.crop_neg = crop_pos, crop_neg

    @property
    def keys(self) -> tuple[str, ...]:
        return ("image", "label") if self.task == "segment" else ("image",)

    def _root(self) -> Path:
        return (
            Path(self.root) if self.root is not None else make_demo_dataset(None, self.synthetic_volumes, 0)
        )

    def prepare_data(self) -> None:
        self._root()  # generates the synthetic set once, in the main process

    def _preprocess(self, keys: Sequence[str]) -> list:
        return preprocess_transforms(keys, self.spacing, self.hu_range, self.check_hu)

    def setup(self, stage: str | None = None) -> None:
        root = self._root()
        cases = [{k: c[k] for k in self.keys} for c in find_cases(root, need_labels=self.task == "segment")]
        n_val = max(1, round(len(cases) * self.val_fraction)) if len(cases) > 1 else 0
        train_idx, val_idx = seeded_split(len(cases), (1 - n_val / len(cases), n_val / len(cases)), self.seed)
        self.train_cases = [cases[i] for i in train_idx] or cases
        self.val_cases = [cases[i] for i in val_idx] or cases
        cache = None if self.cache_dir is None else str(Path(self.cache_dir))
        augment = training_transforms(
            self.keys, self.crop_size, self.crops_per_volume, self.flip_prob, self.crop_sampling,
            self.crop_pos, self.crop_neg,
        )  # fmt: skip
        self.train_dataset = CTDataset(self.train_cases, self._preprocess(self.keys), augment, cache)
        self.val_dataset = CTDataset(self.val_cases, self._preprocess(self.keys), self._evaluation(), cache)

    def _evaluation(self) -> list:
        # Segmentation is scored on whole volumes (sliding windows); pre-training on a centre crop.
        if self.task == "segment":
            return whole_volume_transforms(self.keys)
        return evaluation_transforms(self.keys, self.crop_size)

    def _evaluation_loader(self, dataset: Dataset):
        # Whole volumes differ in size: one per batch.
        batch_size = 1 if self.task == "segment" else None
        return self.eval_loader(dataset, batch_size=batch_size, collate_fn=list_data_collate)

    def train_dataloader(self):
        return self.train_loader(self.train_dataset, collate_fn=list_data_collate)

    def val_dataloader(self):
        return self._evaluation_loader(self.val_dataset)

    def test_dataloader(self):
        if self.test_root is None or self.task != "segment":
            raise MedzooDataError(
                "data.test_root",
                "not set" if self.test_root is None else f"task {self.task!r}",
                "`hyspark finetune test --data.test_root DIR` with a labelled test set (task 'segment')",
            )
        cases = [{k: c[k] for k in self.keys} for c in find_cases(self.test_root, need_labels=True)]
        dataset = CTDataset(cases, self._preprocess(self.keys), self._evaluation(), None)
        return self._evaluation_loader(dataset)

    def predict_cases(self) -> list[dict[str, str]]:
        if self.predict_root is None:
            self.setup("predict")
            return [{"image": c["image"]} for c in self.val_cases]
        path = Path(self.predict_root)
        return [{"image": str(path)}] if path.is_file() else [{"image": c["image"]} for c in find_cases(path)]

    def predict_dataloader(self):
        transforms = [*self._preprocess(("image",)), mt.EnsureTyped("image", track_meta=True)]
        dataset = CTDataset(self.predict_cases(), transforms, [], None)
        # One whole volume per batch (sizes differ between volumes).
        return self.eval_loader(dataset, batch_size=1, collate_fn=_collate_single)


def _collate_single(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Prediction keeps each volume whole (sizes differ): image (1, 1, X, Y, Z) MetaTensor + its path."""
    (item,) = items
    image = item["image"]
    return {"image": image[None], "path": str(image.meta["filename_or_obj"])}
