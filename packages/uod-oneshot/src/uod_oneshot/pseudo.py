"""One-shot pseudo-labelling with a trained stage-1 network, its report, and the template picker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data._utils.collate import default_collate

from medzoo.io import write_json, write_landmark_csv
from uod_oneshot.data import LandmarkDataset, UODDataModule, _Entry
from uod_oneshot.layouts import LandmarkSample
from uod_oneshot.matching import match_landmarks, most_representative, template_features
from uod_oneshot.module import UODSSLModule, landmark_metrics, to_original

__all__ = ["mean_shape_predictions", "pick_templates", "pseudo_label_domains"]


def _batches(dataset: LandmarkDataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        yield default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def mean_shape_predictions(samples: Sequence[LandmarkSample], sizes_hw: np.ndarray) -> np.ndarray:
    """The mean-shape baseline: every image gets the mean of the samples' landmarks in normalised
    coordinates (x / W, y / H), scaled to its own size. Returns (N, K, 2) original pixels."""
    scale = sizes_hw[:, ::-1].astype(np.float64)  # (N, 2) as (W, H)
    normalised = np.stack([s.coords for s in samples]) / scale[:, None, :]
    return np.nanmean(normalised, axis=0)[None] * scale[:, None, :]


def _match(
    module: UODSSLModule,
    dataset: LandmarkDataset,
    domain: int,
    queries: list[torch.Tensor],
    batch_size: int,
    num_landmarks: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot matches of every image of ``dataset``: (N, K, 2) original pixels and (N, 2) sizes (H, W)."""
    device = next(module.parameters()).device
    predictions, sizes = [], []
    for batch in _batches(dataset, batch_size):
        coords, _ = match_landmarks(module.embed(batch["image"].to(device), domain), queries, module.strides)
        predictions.append(to_original(coords.cpu(), batch["to_input"]).numpy())
        sizes.append(batch["original_size"].numpy())
    if not predictions:
        return np.empty((0, num_landmarks, 2)), np.empty((0, 2), dtype=np.int64)
    return np.concatenate(predictions), np.concatenate(sizes)


def _truth(samples: Sequence[LandmarkSample]) -> tuple[np.ndarray, np.ndarray]:
    """The annotated (N, K, 2) landmarks and (N, 2) spacings (NaN where unknown) of ``samples``."""
    spacing = np.array([s.spacing or (np.nan, np.nan) for s in samples], dtype=np.float64)
    return np.stack([s.coords for s in samples]), spacing


@torch.no_grad()
def pseudo_label_domains(
    module: UODSSLModule, datamodule: UODDataModule, output_dir: str | Path, batch_size: int = 4
) -> dict[str, Any]:
    """Pseudo-label every training/validation image of every domain from its one template.

    Writes ``output_dir/<domain>.csv`` (medzoo landmark CSV: ``image`` = the image path, then ``x0, y0, ...``
    in ORIGINAL pixels; the template's row holds its annotation) and ``output_dir/summary.json`` with, per
    domain, the template, the pseudo-labels' MRE against the ground truth where the layout has it, and the
    mean-shape baseline's MRE (a report only: stage 2 never sees these labels), and under ``test`` the MRE of
    the same matching on the domain's test split (stage 1 on stage 2's test images, like for like).

    Returns:
        the summary as a dict.
    """
    output_dir = Path(output_dir)
    module.eval()
    datamodule.setup("fit")
    device = next(module.parameters()).device
    summary: dict[str, Any] = {}
    for d, (spec, splits) in enumerate(zip(datamodule.specs, datamodule.domain_splits, strict=True)):
        template, pool = splits["train"][0], splits["train"][1:] + splits["val"]
        entries = [_Entry(d, s, i) for i, s in enumerate([template, *pool])]
        dataset = LandmarkDataset(entries, datamodule.specs, datamodule.input_size)
        first = default_collate([dataset[0]])
        # the template and the targets go through the same full-view network, as in the reference's
        # tester: the crop network has only seen crops, whose coarse maps cover a different area
        template_maps = module.embed(first["image"].to(device), d)
        queries = template_features(template_maps, first["landmarks"][0].to(device), module.strides)
        rest = LandmarkDataset(entries[1:], datamodule.specs, datamodule.input_size)
        pred, sizes = _match(module, rest, d, queries, batch_size, spec.num_landmarks)
        rows = {str(template.image): template.coords}
        rows.update({str(s.image): p for s, p in zip(pool, pred, strict=True)})
        write_landmark_csv(output_dir / f"{spec.name}.csv", rows)
        report: dict[str, Any] = {"template": str(template.image), "images": len(pool)}
        if pool and all(np.isfinite(s.coords).all() for s in pool):
            target, spacing = _truth(pool)
            report["pseudo"] = landmark_metrics(pred, target, spacing)
            baseline = mean_shape_predictions(pool, sizes)
            report["mean_shape"] = landmark_metrics(baseline, target, spacing)
        test = splits["test"]
        if test and all(np.isfinite(s.coords).all() for s in test):
            # the same one-shot matching on the held-out test images: stage 1 on stage 2's test split
            tests = LandmarkDataset(
                [_Entry(d, s, i) for i, s in enumerate(test)], datamodule.specs, datamodule.input_size
            )
            found, _ = _match(module, tests, d, queries, batch_size, spec.num_landmarks)
            report["test"] = landmark_metrics(found, *_truth(test))
        summary[spec.name] = report
    write_json(output_dir / "summary.json", summary)
    return summary


@torch.no_grad()
def pick_templates(module: UODSSLModule, datamodule: UODDataModule, batch_size: int = 4) -> dict[str, Any]:
    """The most representative training image of each domain: the medoid of the stage-1 stride-32
    embeddings (flattened, so the spatial layout counts) under cosine distance.

    Returns:
        ``{domain: {"template": name, "mean_distance": float, "candidates": N}}``.
    """
    module.eval()
    datamodule.setup("fit")
    device = next(module.parameters()).device
    coarsest = module.strides.index(max(module.strides))
    out = {}
    for d, (spec, splits) in enumerate(zip(datamodule.specs, datamodule.domain_splits, strict=True)):
        samples = splits["train"]
        dataset = LandmarkDataset(
            [_Entry(d, s, i) for i, s in enumerate(samples)], datamodule.specs, datamodule.input_size
        )
        descriptors = torch.cat(
            [
                module.embed(b["image"].to(device), d)[coarsest].flatten(1).cpu()
                for b in _batches(dataset, batch_size)
            ]
        )
        index, mean = most_representative(descriptors)
        out[spec.name] = {
            "template": samples[index].image.name,
            "mean_distance": float(mean[index]),
            "candidates": len(samples),
        }
    return out
