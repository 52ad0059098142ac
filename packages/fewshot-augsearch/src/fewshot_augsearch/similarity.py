"""Pluggable similarities between two crops and distances between two similarity distributions.

Similarities take two crops (H, W) as float numpy arrays (same shape, intensities in [0, 1]) and return a
float (higher = more alike):

- ``ssim``: structural similarity (scikit-image, Gaussian-free 7x7 windows, ``data_range=1``). Default.
- ``mutual_information``: mutual information (nats) of the joint intensity histogram (``bins`` on [0, 1]).
- ``feature_cosine``: cosine similarity of the mean-pooled features of an encoder (:class:`FeatureCosine`,
  e.g. the ALPNet encoder of a checkpoint).

Distances take two 1-D samples and return a float >= 0 (0 = same distribution):

- ``wasserstein``: the 1-Wasserstein distance of the empirical distributions. Default.
- ``kl``: KL(p_intra_class || p_intra_instance) of histograms on a shared range with add-epsilon smoothing.
- ``mean_std``: |mean_a - mean_b| + |std_a - std_b|.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from skimage.metrics import structural_similarity

from medzoo.errors import MedzooDataError

__all__ = [
    "DISTANCES",
    "SIMILARITIES",
    "FeatureCosine",
    "kl_divergence",
    "mean_std_distance",
    "mutual_information",
    "ssim",
    "wasserstein1",
]

Similarity = Callable[[np.ndarray, np.ndarray], float]


def _check_pair(a: np.ndarray, b: np.ndarray, where: str) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise MedzooDataError(where, f"crops of shapes {a.shape} and {b.shape}", "two 2D crops of one shape")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two (H, W) crops in [0, 1] (1 = identical)."""
    _check_pair(a, b, "ssim")
    return float(structural_similarity(a, b, data_range=1.0, win_size=min(7, *a.shape) // 2 * 2 + 1))


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Mutual information in nats of the joint histogram of two (H, W) crops on [0, 1]."""
    _check_pair(a, b, "mutual_information")
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins, range=[[0, 1], [0, 1]])
    p = joint / joint.sum()
    pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


class FeatureCosine:
    """Cosine similarity of mean-pooled encoder features; ``encoder``: (B, 1, H, W) -> (B, C, h, w)."""

    def __init__(self, encoder: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.encoder = encoder

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        _check_pair(a, b, "feature_cosine")
        batch = torch.as_tensor(np.stack([a, b]), dtype=torch.float32)[:, None]
        features = self.encoder(batch).mean(dim=(-1, -2))
        return float(torch.nn.functional.cosine_similarity(features[0], features[1], dim=0))


SIMILARITIES: dict[str, Similarity] = {"ssim": ssim, "mutual_information": mutual_information}
"""Label- and weight-free similarities by name; ``feature_cosine`` needs an encoder (see FeatureCosine)."""


def _samples(a, b, where: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MedzooDataError(
            where, f"samples of sizes {len(a)} and {len(b)}", "two non-empty finite samples"
        )
    return a, b


def wasserstein1(a, b) -> float:
    """1-Wasserstein distance of the empirical distributions of ``a`` and ``b`` (integral of |F_a - F_b|)."""
    a, b = _samples(a, b, "wasserstein1")
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(values)))


def kl_divergence(a, b, bins: int = 20, eps: float = 1e-6) -> float:
    """KL(P_a || P_b) of histograms of ``a`` and ``b`` on their common range (+eps smoothing)."""
    a, b = _samples(a, b, "kl_divergence")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 0.0
    p = np.histogram(a, bins=bins, range=(lo, hi))[0] + eps
    q = np.histogram(b, bins=bins, range=(lo, hi))[0] + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def mean_std_distance(a, b) -> float:
    """|mean(a) - mean(b)| + |std(a) - std(b)| (population standard deviations)."""
    a, b = _samples(a, b, "mean_std_distance")
    return float(abs(a.mean() - b.mean()) + abs(a.std() - b.std()))


DISTANCES: dict[str, Callable[..., float]] = {
    "wasserstein": wasserstein1,
    "kl": kl_divergence,
    "mean_std": mean_std_distance,
}
