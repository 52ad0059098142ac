"""Several landmark domains in one DataModule: single-domain batches for stage 1 (two views) and stage 2.

Each domain is a ``DomainSpec`` (given as a plain dict in the config): its layout (``uod_oneshot.layouts``),
folder, number of landmarks, one-shot template, and intensity normalisation. ``root: null`` makes the domain
a generated phantom set (``medzoo.synthetic.make_landmark_phantoms``, written in the ``csv`` layout into the
medzoo cache), so the demo exercises the real loaders.

Splits per domain: the layout's test split; ``val`` is held out of its training split (``val_fraction``).
Model selection never sees the test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from medzoo.errors import MedzooDataError
from medzoo.io import read_image, read_landmark_csv
from medzoo.lightning import MedzooDataModule, epoch_seed, seeded_split
from uod_oneshot.layouts import LandmarkSample, LayoutRequest, load_layout

__all__ = [
    "DomainSpec",
    "LandmarkDataset",
    "SSLViewDataset",
    "UODDataModule",
    "UODSSLDataModule",
    "load_image",
    "resize_matrix",
]


@dataclass(frozen=True)
class DomainSpec:
    """One domain of the universal model.

    Attributes:
        name: a short name (``head``, ``hand``, ``chest``); pseudo-labels are written as ``<name>.csv``.
        layout: ``csv``, ``isbi2015``, ``hand``, ``jsrt`` or ``normalized_txt``.
        root: the dataset folder; ``None`` = generated phantoms in the medzoo cache.
        num_landmarks: K of the domain.
        template: the one annotated image (its file name or stem, in the training split); ``None`` = the
            first training image (or choose one with ``uod-oneshot pick-template``).
        mean, std: intensity normalisation of the [0, 1] grey image.
        pad_to_square: pad right/bottom to a square before resizing (the reference does it for the head).
        annotation_file, image_dir, label_dir, spacing: layout settings (see ``uod_oneshot.layouts``).
        synthetic_images, synthetic_size, synthetic_seed, synthetic_rotation_deg, synthetic_translation: the
            phantom set of a ``root: null`` domain (pose variation: rotation in +-deg, shift in half-sides).
    """

    name: str
    layout: str = "csv"
    root: str | None = None
    num_landmarks: int = 6
    template: str | None = None
    mean: float = 0.5
    std: float = 0.25
    pad_to_square: bool = False
    annotation_file: str | None = None
    image_dir: str = "images"
    label_dir: str | None = None
    spacing: float | None = None
    synthetic_images: int = 40
    synthetic_size: tuple[int, int] = (256, 256)
    synthetic_seed: int = 0
    synthetic_rotation_deg: float = 15.0
    synthetic_translation: float = 0.06

    @classmethod
    def from_config(cls, value: DomainSpec | dict[str, Any], where: str) -> DomainSpec:
        if isinstance(value, DomainSpec):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown or "name" not in value:
            raise MedzooDataError(where, f"keys {sorted(value)}", f"'name' and any of {sorted(known)}")
        spec = dict(value)
        if "synthetic_size" in spec:
            spec["synthetic_size"] = tuple(int(v) for v in spec["synthetic_size"])
        return cls(**spec)


# ------------------------------------------------------------------------------------------- images


def resize_matrix(source_hw: Sequence[int], target_hw: Sequence[int]) -> np.ndarray:
    """3x3 map from pixels of a ``source_hw`` image to the same image resized to ``target_hw`` (centres)."""
    sy, sx = target_hw[0] / source_hw[0], target_hw[1] / source_hw[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def load_image(
    path: Path, size: int, pad_to_square: bool
) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """A grey image in [0, 1], (padded right/bottom to a square,) resized to ``size`` x ``size``.

    Returns:
        ``(image, to_input, original_hw)``: (1, size, size) float32; (3, 3) original px -> input px.
    """
    array = np.asarray(read_image(path).array)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2) if array.shape[2] >= 3 else array[..., 0]
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    else:
        values = array.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    image = torch.from_numpy(np.ascontiguousarray(values))[None]
    original_hw = (int(values.shape[0]), int(values.shape[1]))
    if pad_to_square:
        side = max(original_hw)
        image = F.pad(image, (0, side - original_hw[1], 0, side - original_hw[0]))
    padded_hw = tuple(image.shape[-2:])
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0]
    return image, resize_matrix(padded_hw, (size, size)), original_hw


def apply_matrix(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(K, 2) (x, y) through a 3x3 affine matrix."""
    return coords @ matrix[:2, :2].T + matrix[:2, 2]


def warp(image: torch.Tensor, matrix: np.ndarray, out_size: int) -> torch.Tensor:
    """Output pixel ``p`` (an ``out_size`` square) shows input pixel ``matrix^-1 p`` (bilinear, zeros out)."""
    _, height, width = image.shape
    inverse = torch.as_tensor(np.linalg.inv(matrix), dtype=torch.float32)
    axis = torch.arange(out_size, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inverse.T
    grid = torch.stack([(2 * points[..., 0] + 1) / width - 1, (2 * points[..., 1] + 1) / height - 1], dim=-1)
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[
        0
    ]


# ------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class _Entry:
    domain: int
    sample: LandmarkSample
    index: int  # unique over all domains of a split


class LandmarkDataset(Dataset):
    """Stage-2 samples: the normalised image and its landmarks in input pixels.

    Items (dicts): ``image`` (1, S, S) float32; ``landmarks`` (K, 2) float32 input px (NaN unknown);
    ``original_landmarks`` (K, 2) float64; ``to_input`` (3, 3) float64; ``spacing`` (2,) float64 (NaN if
    unknown);
    ``original_size`` (2,) int64 (H, W); ``domain`` int; ``index`` int; ``path`` str.

    Args:
        entries: the samples with their domain and global index.
        specs: the domains.
        input_size: S (576 in the paper).
        augment: the photometric augmentation the reference defines for hand and JSRT but never applies
            (contrast x[0.75, 1.5], brightness x[0.8, 1.2],
            Gaussian noise with std up to 0.05), seeded from ``(seed, epoch, index)``.
        seed: augmentation seed.
    """

    def __init__(
        self,
        entries: Sequence[_Entry],
        specs: Sequence[DomainSpec],
        input_size: int,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.entries, self.specs, self.input_size = list(entries), list(specs), int(input_size)
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        entry = self.entries[position]
        spec = self.specs[entry.domain]
        image, to_input, original_hw = load_image(entry.sample.image, self.input_size, spec.pad_to_square)
        if self.augment:
            rng = np.random.default_rng([self.seed, int(epoch), entry.index])
            mean = image.mean()
            image = (image - mean) * rng.uniform(0.75, 1.5) + mean
            image = image * rng.uniform(0.8, 1.2)
            image = image + float(rng.uniform(0, 0.05)) * torch.from_numpy(
                rng.standard_normal(image.shape).astype(np.float32)
            )
            image = image.clamp(0, 1)
        spacing = entry.sample.spacing or (math.nan, math.nan)
        return {
            "image": (image - spec.mean) / spec.std,
            "landmarks": torch.as_tensor(apply_matrix(to_input, entry.sample.coords), dtype=torch.float32),
            "original_landmarks": torch.as_tensor(entry.sample.coords, dtype=torch.float64),
            "to_input": torch.as_tensor(to_input, dtype=torch.float64),
            "spacing": torch.tensor(spacing, dtype=torch.float64),
            "original_size": torch.tensor(original_hw, dtype=torch.int64),
            "domain": entry.domain,
            "index": entry.index,
            "path": str(entry.sample.image),
        }


class SSLViewDataset(LandmarkDataset):
    """Stage-1 pairs: the full image and a rotated, colour-jittered random crop, with matching points.

    Extra items: ``crop`` (1, c, c) float32 (c = ``crop_size``); ``crop_points`` (N, 2) float32 crop px;
    ``full_points`` (N, 2) float32 the same positions in full-view px (all inside both views).

    Args:
        crop_size: c (256 for S = 384 in the paper).
        rotation_deg: crop rotation, uniform in +-rotation_deg (the reference: 20).
        brightness, contrast: ColorJitter factors (uniform in 1 +- value; the paper: 0.15, 0.25).
        num_points: N query points per pair.
        focus: per domain, (K, 2) template landmarks in input px to draw the points near (an option, not the
            reference's training: a candidate at full-view position p is kept with probability
            ``min(1, sum_k exp(-|p - l_k|^2 / (2 focus_sigma^2)))``); ``None``: uniform in the crop.
        focus_sigma: the width of that weighting in input px.
        (other arguments: see :class:`LandmarkDataset`; draws use ``(seed, epoch, index)``.)
    """

    def __init__(
        self,
        entries: Sequence[_Entry],
        specs: Sequence[DomainSpec],
        input_size: int,
        crop_size: int,
        rotation_deg: float = 20.0,
        brightness: float = 0.15,
        contrast: float = 0.25,
        num_points: int = 1,
        seed: int = 0,
        focus: dict[int, np.ndarray] | None = None,
        focus_sigma: float = 12.0,
    ) -> None:
        super().__init__(entries, specs, input_size, augment=False, seed=seed)
        self.focus, self.focus_sigma = focus, float(focus_sigma)
        if not 0 < crop_size <= input_size:
            raise MedzooDataError("data.crop_size", crop_size, f"0 < crop_size <= input_size ({input_size})")
        self.crop_size, self.rotation_deg = int(crop_size), float(rotation_deg)
        self.brightness, self.contrast, self.num_points = float(brightness), float(contrast), int(num_points)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        entry = self.entries[position]
        spec = self.specs[entry.domain]
        image, _, _ = load_image(entry.sample.image, self.input_size, spec.pad_to_square)
        rng = np.random.default_rng([self.seed, int(epoch), entry.index, 1])
        size, crop = self.input_size, self.crop_size
        x0, y0 = rng.integers(0, size - crop + 1, 2)
        angle = math.radians(rng.uniform(-self.rotation_deg, self.rotation_deg))
        centre = (crop - 1) / 2.0
        cos, sin = math.cos(angle), math.sin(angle)
        # full px -> crop px: shift the crop window to the origin, then rotate about the crop's centre
        shift = np.array([[1, 0, -x0 - centre], [0, 1, -y0 - centre], [0, 0, 1]], dtype=np.float64)
        rotate = np.array([[cos, -sin, centre], [sin, cos, centre], [0, 0, 1]], dtype=np.float64)
        to_crop = rotate @ shift
        view = warp(image, to_crop, crop)
        view = view * rng.uniform(1 - self.brightness, 1 + self.brightness)
        mean = view.mean()
        view = ((view - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean).clamp(0, 1)
        crop_points, full_points = self._points(rng, np.linalg.inv(to_crop), entry.domain)
        return {
            "image": (image - spec.mean) / spec.std,
            "crop": (view - spec.mean) / spec.std,
            "crop_points": torch.as_tensor(crop_points, dtype=torch.float32),
            "full_points": torch.as_tensor(full_points, dtype=torch.float32),
            "domain": entry.domain,
            "index": entry.index,
        }

    def _points(
        self, rng: np.random.Generator, to_full: np.ndarray, domain: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """N crop positions whose full-view positions lie inside the full image (the rotated crop's corners
        may fall outside); drawn from the central region, which always maps inside. With ``focus``,
        candidates are kept with the focus weight; if too few pass in 20 rounds, the rest are uniform."""
        crop, size = self.crop_size, self.input_size
        centres = None if self.focus is None else self.focus.get(domain)
        chosen = np.empty((0, 2))
        for round_ in range(40):
            candidates = rng.uniform(0, crop - 1, (4 * self.num_points, 2))
            full = apply_matrix(to_full, candidates)
            ok = ((full >= 0) & (full <= size - 1)).all(axis=1)
            if centres is not None and round_ < 20:
                d2 = ((full[:, None, :] - centres[None]) ** 2).sum(-1)
                weight = np.minimum(1.0, np.exp(-d2 / (2 * self.focus_sigma**2)).sum(1))
                ok &= rng.uniform(size=len(candidates)) < weight
            chosen = np.concatenate([chosen, candidates[ok]])[: self.num_points]
            if len(chosen) == self.num_points:
                break
        if len(chosen) < self.num_points:  # pragma: no cover - a disc of radius crop/2 always maps inside
            chosen = np.full((self.num_points, 2), (crop - 1) / 2.0)
        chosen = np.round(chosen)
        return chosen, apply_matrix(to_full, chosen)


# ----------------------------------------------------------------------------------- domain batching


class EpochSampler(Sampler[int]):
    """``range(n)`` in order; remembers the epoch Lightning sets, for datasets that batch by epoch."""

    def __init__(self, num_items: int) -> None:
        self.num_items, self.epoch = int(num_items), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(range(self.num_items))

    def __len__(self) -> int:
        return self.num_items


class DomainBatches(Dataset):
    """Single-domain batches: item ``i`` is a whole batch (a list of samples of one domain).

    Each domain's samples are permuted (training) and chunked into ``batch_size``; then the batches of all
    domains are ordered: ``"shuffle"`` (a seeded permutation: the reference's random domain per batch),
    ``"alternate"`` (round-robin over the domains: the paper's text) or ``"sequential"`` (evaluation).
    The order depends only on ``(seed, epoch)``; the epoch comes from ``epoch_source`` (the loader's sampler).

    Args:
        dataset: a :class:`LandmarkDataset` (or :class:`SSLViewDataset`) over all domains.
        batch_size: samples per batch.
        order: ``shuffle``, ``alternate`` or ``sequential``.
        seed: the order's seed.
    """

    def __init__(
        self, dataset: LandmarkDataset, batch_size: int, order: str = "shuffle", seed: int = 0
    ) -> None:
        if order not in ("shuffle", "alternate", "sequential"):
            raise MedzooDataError("data.domain_order", repr(order), "'shuffle', 'alternate' or 'sequential'")
        self.dataset, self.batch_size, self.order, self.seed = dataset, int(batch_size), order, int(seed)
        self.epoch_source: Any = None
        self.by_domain: dict[int, list[int]] = {}
        for position, entry in enumerate(dataset.entries):
            self.by_domain.setdefault(entry.domain, []).append(position)
        self._length = sum(math.ceil(len(p) / self.batch_size) for p in self.by_domain.values())

    def __len__(self) -> int:
        return self._length

    def batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(epoch_seed(self.seed, epoch))
        per_domain = []
        for domain in sorted(self.by_domain):
            positions = self.by_domain[domain]
            if self.order != "sequential":
                positions = [positions[i] for i in rng.permutation(len(positions))]
            per_domain.append(
                [positions[i : i + self.batch_size] for i in range(0, len(positions), self.batch_size)]
            )
        if self.order == "alternate":
            longest = max(len(b) for b in per_domain)
            return [b[i] for i in range(longest) for b in per_domain if i < len(b)]
        flat = [batch for batches in per_domain for batch in batches]
        if self.order == "shuffle":
            flat = [flat[i] for i in rng.permutation(len(flat))]
        return flat

    def __getitem__(self, item: int) -> dict[str, Any]:
        epoch = getattr(self.epoch_source, "epoch", 0)
        return default_collate([self.dataset[(epoch, p)] for p in self.batches(epoch)[item]])


# --------------------------------------------------------------------------------------- DataModules


class UODDataModule(MedzooDataModule):
    """The domains of a universal one-shot detector, for stage 2 (DATR) training and evaluation.

    Training labels (``labels``): ``"pseudo"`` (the one-shot protocol: the stage-1 pseudo-labels in
    ``pseudo_labels/<domain>.csv``, written by ``uod-oneshot pseudo-label``) or ``"ground_truth"`` (the
    fully supervised upper bound). Validation uses the same source as training; test always uses the
    ground truth.

    Args:
        domains: one dict per domain with the fields of :class:`DomainSpec`.
        input_size: S, the square network input (576 in the paper).
        labels: ``"pseudo"`` or ``"ground_truth"``.
        pseudo_labels: the folder of ``<domain>.csv`` pseudo-labels (needed with ``labels: pseudo``).
        val_fraction: share of each domain's training images held out for validation.
        test_fraction: test share of layouts without an official split (``csv``, ``normalized_txt``).
        domain_order: batches by domain: ``shuffle`` (the reference) or ``alternate``.
        augment: photometric augmentation in training (an option: the reference's stage-2 loaders define one
            for hand and JSRT but never apply it, and comment it out for the head; so off by default).
        predict_domain: the domain of the ``predict_root`` images (default: the first).
        root: unused here (each domain has its own ``root``; the contract's flag is kept for symmetry).
        batch_size, num_workers, seed, predict_root, cache_dir: see ``MedzooDataModule``.
    """

    def __init__(
        self,
        domains: list[dict[str, Any]] | None = None,
        input_size: int = 576,
        labels: Literal["pseudo", "ground_truth"] = "pseudo",
        pseudo_labels: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        domain_order: Literal["shuffle", "alternate"] = "shuffle",
        augment: bool = False,
        predict_domain: str | None = None,
        root: str | Path | None = None,
        batch_size: int = 4,
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
        self.save_hyperparameters()
        raw = domains or []
        self.specs = [DomainSpec.from_config(d, f"data.domains[{i}]") for i, d in enumerate(raw)]
        if not self.specs:
            raise MedzooDataError(
                "data.domains", "no domains", "at least one domain (name, layout, root, ...)"
            )
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise MedzooDataError("data.domains", f"names {names}", "distinct domain names")
        if labels not in ("pseudo", "ground_truth"):
            raise MedzooDataError("data.labels", repr(labels), "'pseudo' or 'ground_truth'")
        self.input_size = int(input_size)
        self.labels, self.pseudo_labels = labels, pseudo_labels
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.domain_order, self.augment = domain_order, augment
        self.predict_domain = predict_domain
        self.splits: dict[str, list[_Entry]] = {}
        self.domain_splits: list[dict[str, list[LandmarkSample]]] = []

    # -- locating and generating data --------------------------------------------------------------------
    @property
    def num_landmarks(self) -> list[int]:
        return [s.num_landmarks for s in self.specs]

    @property
    def domain_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def domain_root(self, spec: DomainSpec) -> Path:
        if spec.root is not None:
            return Path(spec.root).expanduser()
        h, w = spec.synthetic_size
        k, n, seed = spec.num_landmarks, spec.synthetic_images, spec.synthetic_seed
        pose = f"-rot{spec.synthetic_rotation_deg:g}-shift{spec.synthetic_translation:g}"
        name = f"{spec.name}-phantoms-k{k}-n{n}-{h}x{w}-seed{seed}{pose}"
        return self.demo_dir() / name

    def prepare_data(self) -> None:
        from medzoo.synthetic import make_landmark_phantoms

        for spec in self.specs:
            root = self.domain_root(spec)
            if spec.root is None and not (root / "landmarks.csv").is_file():
                make_landmark_phantoms(
                    root,
                    n_images=spec.synthetic_images,
                    num_landmarks=spec.num_landmarks,
                    size=spec.synthetic_size,
                    seed=spec.synthetic_seed,
                    rotation_deg=spec.synthetic_rotation_deg,
                    translation=spec.synthetic_translation,
                )

    # -- splits -------------------------------------------------------------------------------------------
    def load_domain(self, spec: DomainSpec) -> dict[str, list[LandmarkSample]]:
        """``{"train", "val", "test"}`` samples of one domain with ground-truth landmarks."""
        request = LayoutRequest(
            root=self.domain_root(spec),
            num_landmarks=spec.num_landmarks,
            annotation_file=spec.annotation_file,
            image_dir=spec.image_dir,
            label_dir=spec.label_dir,
            spacing=spec.spacing,
            test_fraction=self.test_fraction,
            seed=self.seed,
        )
        splits = load_layout(spec.layout if spec.root is not None else "csv", request)
        train = splits["train"]
        if not train:
            raise MedzooDataError(
                f"domain {spec.name!r} ({request.root})", "no training images", "at least one image"
            )
        template = self.template_index(spec, train)
        if not np.isfinite(train[template].coords).all():
            raise MedzooDataError(
                f"domain {spec.name!r} template {train[template].image}",
                "missing landmarks (NaN)",
                f"all {spec.num_landmarks} landmarks annotated on the one-shot template",
            )
        rest = [i for i in range(len(train)) if i != template]
        keep, val = seeded_split(len(rest), (1.0 - self.val_fraction, self.val_fraction), self.seed)
        return {
            "train": [train[template]] + [train[rest[i]] for i in keep],
            "val": [train[rest[i]] for i in val],
            "test": splits["test"],
        }

    @staticmethod
    def template_index(spec: DomainSpec, train: Sequence[LandmarkSample]) -> int:
        """Position of the domain's template in its training split (the first image when unset)."""
        if spec.template is None:
            return 0
        for i, sample in enumerate(train):
            if spec.template in (sample.image.name, sample.image.stem):
                return i
        raise MedzooDataError(
            f"domains[{spec.name}].template",
            repr(spec.template),
            "the name or stem of an image of the training split",
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.domain_splits = [self.load_domain(spec) for spec in self.specs]
        if self.labels == "pseudo" and stage in ("fit", "validate", None):
            self.domain_splits = [
                self._with_pseudo_labels(spec, s)
                for spec, s in zip(self.specs, self.domain_splits, strict=True)
            ]
        offset = 0
        for split in ("train", "val", "test"):
            entries = []
            for d, splits in enumerate(self.domain_splits):
                for sample in splits[split]:
                    entries.append(_Entry(d, sample, offset))
                    offset += 1
            self.splits[split] = entries

    def _with_pseudo_labels(
        self, spec: DomainSpec, splits: dict[str, list[LandmarkSample]]
    ) -> dict[str, list[LandmarkSample]]:
        if self.pseudo_labels is None:
            raise MedzooDataError(
                "data.pseudo_labels",
                "not set",
                "the folder written by `uod-oneshot pseudo-label` (or data.labels: ground_truth)",
            )
        path = Path(self.pseudo_labels) / f"{spec.name}.csv"
        if not path.is_file():
            raise MedzooDataError(
                path, "no such file", f"the pseudo-labels of domain {spec.name!r} (uod-oneshot pseudo-label)"
            )
        table = read_landmark_csv(path)
        out = {}
        for split in ("train", "val"):
            samples = []
            for sample in splits[split]:
                coords = table.get(str(sample.image))
                if coords is None:
                    raise MedzooDataError(
                        path, f"no row for {sample.image}", "one row per training image (rerun pseudo-label)"
                    )
                if coords.shape[0] != spec.num_landmarks:
                    raise MedzooDataError(path, f"{coords.shape[0]} landmarks", f"{spec.num_landmarks}")
                samples.append(LandmarkSample(sample.image, coords, sample.spacing))
            out[split] = samples
        out["test"] = splits["test"]
        return out

    # -- loaders ------------------------------------------------------------------------------------------
    def _dataset(self, split: str, train: bool) -> LandmarkDataset:
        entries = self.splits.get(split, [])
        if not entries:
            raise MedzooDataError(
                f"{split} split", "no images", "at least one (check the domains and data.val_fraction)"
            )
        return LandmarkDataset(
            entries, self.specs, self.input_size, augment=train and self.augment, seed=self.seed
        )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        batches = DomainBatches(
            dataset, self.batch_size, self.domain_order if train else "sequential", self.seed
        )
        sampler = EpochSampler(len(batches))
        batches.epoch_source = sampler
        return DataLoader(
            batches,
            batch_size=None,
            sampler=sampler,
            collate_fn=lambda batch: batch,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train", True), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val", False), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test", False), train=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_root is None:
            return self.test_dataloader()
        names = self.domain_names
        name = self.predict_domain or names[0]
        if name not in names:
            raise MedzooDataError("data.predict_domain", repr(name), f"one of {names}")
        domain = names.index(name)
        k = self.specs[domain].num_landmarks
        entries = [
            _Entry(domain, LandmarkSample(p, np.full((k, 2), np.nan), _spacing(self.specs[domain])), i)
            for i, p in enumerate(self.predict_files())
        ]
        return self._loader(LandmarkDataset(entries, self.specs, self.input_size), train=False)

    def describe(self) -> dict[str, Any]:
        """Plain settings (for logs): the domains and the split sizes."""
        return {
            "domains": [asdict(s) for s in self.specs],
            "sizes": {split: len(entries) for split, entries in self.splits.items()},
        }


def _spacing(spec: DomainSpec) -> tuple[float, float] | None:
    return None if spec.spacing is None else (spec.spacing, spec.spacing)


class UODSSLDataModule(UODDataModule):
    """The domains for stage 1: unlabelled full/crop pairs (``SSLViewDataset``); labels are not read.

    Args:
        crop_size: the crop view's side (256 at input 384 in the paper).
        rotation_deg, brightness, contrast: the crop's augmentation (20 deg, 0.15, 0.25).
        num_points: query points per pair.
        point_focus: draw the training pairs' query points near each domain's template landmarks (an option;
            the reference draws them uniformly: its unused ``retfunc2`` samples near the template's
            landmarks); the template's annotation is the only label it reads.
        point_focus_sigma: the width of that weighting as a fraction of ``input_size``.
        (others: see :class:`UODDataModule`; ``labels`` is fixed to the ground truth, which stage 1 only
        uses for the pseudo-label report and ``point_focus``'s template, never for training.)
    """

    def __init__(
        self,
        domains: list[dict[str, Any]] | None = None,
        input_size: int = 384,
        crop_size: int = 256,
        rotation_deg: float = 20.0,
        brightness: float = 0.15,
        contrast: float = 0.25,
        num_points: int = 1,
        point_focus: bool = False,
        point_focus_sigma: float = 0.125,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        domain_order: Literal["shuffle", "alternate"] = "shuffle",
        root: str | Path | None = None,
        batch_size: int = 6,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(
            domains=domains,
            input_size=input_size,
            labels="ground_truth",
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            domain_order=domain_order,
            augment=False,
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            predict_root=predict_root,
            cache_dir=cache_dir,
        )
        self.save_hyperparameters()
        self.crop_size, self.rotation_deg = int(crop_size), float(rotation_deg)
        self.brightness, self.contrast, self.num_points = float(brightness), float(contrast), int(num_points)
        self.point_focus, self.point_focus_sigma = bool(point_focus), float(point_focus_sigma)

    def template_landmarks(self) -> dict[int, np.ndarray]:
        """Each domain's template landmarks in input pixels (the template is the first training image)."""
        out = {}
        for d, (spec, splits) in enumerate(zip(self.specs, self.domain_splits, strict=True)):
            template = splits["train"][0]
            _, to_input, _ = load_image(template.image, self.input_size, spec.pad_to_square)
            out[d] = apply_matrix(to_input, template.coords)
        return out

    def _dataset(self, split: str, train: bool) -> LandmarkDataset:
        entries = self.splits.get(split, [])
        if not entries:
            raise MedzooDataError(
                f"{split} split", "no images", "at least one (check the domains and data.val_fraction)"
            )
        return SSLViewDataset(
            entries,
            self.specs,
            self.input_size,
            self.crop_size,
            self.rotation_deg,
            self.brightness,
            self.contrast,
            self.num_points,
            seed=self.seed,
            focus=self.template_landmarks() if train and self.point_focus else None,
            focus_sigma=self.point_focus_sigma * self.input_size,
        )

    def predict_dataloader(self) -> DataLoader:
        raise MedzooDataError(
            "uod-oneshot ssl predict", "not a stage-1 verb", "uod-oneshot pseudo-label --ckpt_path ..."
        )
