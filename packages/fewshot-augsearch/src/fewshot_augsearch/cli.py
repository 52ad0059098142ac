"""Command line: ``fewshot-augsearch search`` (theta as YAML), ``pseudo-label`` (superpixel files), and
Lightning's ``fit|validate|test|predict --config paper|chaos|demo`` (``--data.augmentation THETA.yaml``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fewshot_augsearch.augment import save_params
from fewshot_augsearch.data import (
    FewShotDataModule,
    cv_folds,
    find_scans,
    load_scan,
    preprocess_intensity,
    search_groups,
    slice_superpixels,
)
from fewshot_augsearch.module import FewShotSegmentationModule
from fewshot_augsearch.search import search as run_search
from fewshot_augsearch.similarity import DISTANCES, SIMILARITIES, FeatureCosine
from medzoo.errors import MedzooDataError
from medzoo.lightning import cli, resolve_ckpt_path


def _feature_encoder(ckpt_path: Path | None):
    if ckpt_path is None:
        raise MedzooDataError(
            "--ckpt_path", "not set", "a checkpoint of `fewshot-augsearch fit` for feature_cosine"
        )
    import torch

    path = Path(ckpt_path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a checkpoint of `fewshot-augsearch fit`")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    hparams = raw.get("hyper_parameters", {}) if isinstance(raw, dict) else {}
    module = FewShotSegmentationModule(hparams.get("variant", "paper"), hparams.get("overrides"))
    module.load_state_dict(raw["state_dict"])
    return module.model.eval().forward_features


def search(
    root: Path | None = None,
    layout: str = "auto",
    modality: Literal["ct", "mr"] = "ct",
    image_size: int = 256,
    fold: int = 0,
    n_folds: int = 5,
    output: Path = Path("augmentation.yaml"),
    similarity: Literal["ssim", "mutual_information", "feature_cosine"] = "ssim",
    distance: Literal["wasserstein", "kl", "mean_std"] = "wasserstein",
    strategy: Literal["grid", "stepwise", "bayesian"] = "grid",
    factors: list[float] | None = None,
    n_bins: int = 8,
    crop_size: int = 64,
    n_augment: int = 4,
    max_anchors: int = 64,
    seed: int = 0,
    ckpt_path: Path | None = None,
    synthetic_volumes: int = 8,
) -> Path:
    """Search augmentation ranges theta without labels; write them as YAML for `fit --data.augmentation`.

    Pseudo-classes: body crops at the same relative axial position in the training scans of the fold.

    Args:
        root: dataset folder (None: the demo's synthetic CT set).
        layout: data layout (auto, alpnet, msd, btcv).
        modality: ct or mr (intensity preprocessing).
        image_size: slice size before cropping.
        fold: cross-validation fold whose training scans are searched on (the test fold is never seen).
        n_folds: number of folds.
        output: YAML file to write: `augmentation:` (theta) and `search:` (settings, scores).
        similarity: ssim, mutual_information, or feature_cosine (the encoder of --ckpt_path).
        distance: wasserstein, kl or mean_std between intra-class and intra-instance similarities.
        strategy: grid (one factor for all), stepwise (per augmentation group), bayesian (GP + EI).
        factors: grid factors (default 0, 0.5, 1, 1.5, 2, 3, 4, 6).
        n_bins: relative axial positions = pseudo-classes.
        crop_size: crops are resized to crop_size x crop_size.
        n_augment: augmentations per anchor crop.
        max_anchors: anchor crops for the intra-instance distribution.
        seed: seed of the augmentation draws.
        ckpt_path: checkpoint for feature_cosine: a file, "best" (<root_dir>/checkpoints/best.ckpt, the best
            validation epoch) or "last" (<root_dir>/checkpoints/last.ckpt, the newest); <root_dir> is
            runs/fewshot-augsearch-demo.
        synthetic_volumes: generated scans when root is None.
    """
    data = FewShotDataModule(
        root=None if root is None else str(root),
        layout=layout,
        modality=modality,
        image_size=image_size,
        fold=fold,
        n_folds=n_folds,
        synthetic_volumes=synthetic_volumes,
    )
    files = find_scans(data.dataset_root(), layout, superpixel_scale=data.superpixel_file_scale)
    train, _, _ = cv_folds(len(files), n_folds, fold)
    scans = [load_scan(files[i], modality, image_size) for i in train]
    groups = search_groups(scans, n_bins, crop_size)
    if similarity == "feature_cosine":
        ckpt = resolve_ckpt_path(str(ckpt_path), "runs/fewshot-augsearch-demo") if ckpt_path else None
        sim = FeatureCosine(_feature_encoder(None if ckpt is None else Path(ckpt)))
    else:
        sim = SIMILARITIES[similarity]
    kwargs: dict[str, Any] = {"factors": tuple(factors)} if factors and strategy == "grid" else {}
    result = run_search(
        groups,
        sim,
        DISTANCES[distance],
        strategy,
        n_augment=n_augment,
        seed=seed,
        max_anchors=max_anchors,
        **kwargs,
    )
    meta = {
        "similarity": similarity,
        "distance": distance,
        "strategy": strategy,
        "factors": result.factors,
        "distance_value": result.distance,
        "intra_class_mean": result.intra_class_mean,
        "intra_class_std": result.intra_class_std,
        "n_groups": len(groups),
        "n_crops": sum(len(g) for g in groups),
        "candidates": len(result.candidates),
    }
    path = save_params(output, result.params, meta)
    print(f"theta (factors {result.factors}, distance {result.distance:.4f}) -> {path}")
    return path


def pseudo_label(
    root: Path,
    output_dir: Path,
    layout: str = "auto",
    modality: Literal["ct", "mr"] = "ct",
    min_size: int = 400,
    sigma: float = 1.0,
    scale: float = 1.0,
    superpixel_scale: str = "MIDDLE",
) -> list[Path]:
    """Write felzenszwalb superpixel pseudo-labels per scan: `<output_dir>/superpix-<SCALE>_<id>.nii.gz`.

    Computed slice by slice (third voxel axis) on the windowed image in its own grid, masked by the body
    foreground; int32 ids (0 outside the body), the image's affine. Put them next to `image_<id>.nii.gz`
    (alpnet layout) to skip recomputing them at training time.

    Args:
        root: dataset folder.
        output_dir: where to write the files (created).
        layout: data layout (auto, alpnet, msd, btcv).
        modality: ct or mr.
        min_size: felzenszwalb min_size (400 in the paper at 256 x 256).
        sigma: felzenszwalb Gaussian pre-smoothing.
        scale: felzenszwalb scale.
        superpixel_scale: name part of the files (MIDDLE as in SSL-ALPNet).
    """
    from medzoo.io import read_volume, write_volume

    written = []
    for files in find_scans(root, layout):
        volume = read_volume(files.image)
        image = preprocess_intensity(volume.array, modality)
        labels = np.stack(
            [slice_superpixels(image[..., z], min_size, sigma, scale) for z in range(image.shape[-1])], -1
        )
        if not labels.any():
            raise MedzooDataError(files.image, "a volume with no body foreground", "a scan with a body")
        path = Path(output_dir) / f"superpix-{superpixel_scale}_{files.scan_id}.nii.gz"
        written.append(write_volume(path, labels.astype(np.int32), volume.affine))
        print(f"{files.image} -> {path} ({int(labels.max())} superpixels in the largest slice)")
    return written


COMMANDS = {"search": search, "pseudo-label": pseudo_label}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``fewshot-augsearch`` script; returns the LightningCLI (tests pass ``args``)."""
    return cli(
        FewShotSegmentationModule,
        FewShotDataModule,
        package="fewshot_augsearch",
        args=args,
        commands=COMMANDS,
    )


if __name__ == "__main__":
    main()
