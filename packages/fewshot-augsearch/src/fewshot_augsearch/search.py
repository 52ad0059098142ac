"""Unsupervised augmentation search: match the intra-instance similarity distribution (a crop vs its
augmentations under theta) to the intra-class distribution (a crop vs other crops of its pseudo-class).

``groups`` are lists of crops (H, W) in [0, 1], one list per pseudo-class (e.g. body crops at the same
relative axial position in different scans, see ``fewshot_augsearch.data.search_groups``). The objective of a
candidate theta is ``distance(intra_class, intra_instance(theta))``. Strategies:

- ``grid``: one factor for all augmentation groups, from ``factors`` (scales the base theta's ranges, see
  :func:`~fewshot_augsearch.augment.scale_params`); the factor with the smallest distance wins.
- ``stepwise``: the sister method: each augmentation group alone grows in steps of ``step`` while the mean
  intra-instance similarity stays >= mean - std of the intra-class similarity; it keeps the last such factor.
- ``bayesian``: one factor per group, Gaussian-process regression (scikit-learn, Matern 5/2) with expected
  improvement over ``n_init`` random + ``n_iter`` guided evaluations in [0, max_factor]^groups.

The same random draws (seeded per crop and per augmentation index) are used for every candidate, so the
objective changes only through theta (common random numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fewshot_augsearch.augment import AUGMENTATION_GROUPS, AugmentationParams, augment, scale_params
from medzoo.errors import MedzooDataError

__all__ = [
    "STRATEGIES",
    "SearchResult",
    "intra_class_similarities",
    "intra_instance_similarities",
    "search",
]

Similarity = Callable[[np.ndarray, np.ndarray], float]


@dataclass
class SearchResult:
    """The chosen theta, its factors per augmentation group and every evaluated candidate."""

    params: AugmentationParams
    factors: dict[str, float]
    distance: float
    intra_class_mean: float
    intra_class_std: float
    candidates: list[dict[str, Any]] = field(default_factory=list)


def _check_groups(groups: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    usable = [list(g) for g in groups if len(g) >= 2]
    if not usable:
        raise MedzooDataError(
            "search groups", f"{len(groups)} groups, none with 2 crops", ">= 1 group of >= 2 crops"
        )
    return usable


def intra_class_similarities(
    groups: Sequence[Sequence[np.ndarray]], similarity: Similarity, max_pairs_per_group: int = 64
) -> np.ndarray:
    """Similarities of every crop pair (i < j) within each group (at most ``max_pairs_per_group`` each)."""
    values = []
    for group in _check_groups(groups):
        pairs = [(i, j) for i in range(len(group)) for j in range(i + 1, len(group))][:max_pairs_per_group]
        values.extend(similarity(group[i], group[j]) for i, j in pairs)
    return np.asarray(values, dtype=np.float64)


def intra_instance_similarities(
    crops: Sequence[np.ndarray],
    params: AugmentationParams,
    similarity: Similarity,
    n_augment: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Similarities of each crop (H, W) in [0, 1] to ``n_augment`` augmentations of itself under ``params``.

    Augmented crops are clipped to [0, 1]. Draw ``k`` of crop ``i`` uses ``default_rng([seed, i, k])``.
    """
    values = []
    for i, crop in enumerate(crops):
        image = torch.as_tensor(crop, dtype=torch.float32)[None]
        for k in range(n_augment):
            augmented, _ = augment(image, None, params, np.random.default_rng([seed, i, k]))
            values.append(similarity(crop, augmented[0].clamp(0, 1).numpy()))
    return np.asarray(values, dtype=np.float64)


class _Objective:
    def __init__(self, groups, base, similarity, distance, n_augment, seed, max_anchors):
        self.groups = _check_groups(groups)
        self.base, self.similarity, self.distance = base, similarity, distance
        self.n_augment, self.seed = n_augment, seed
        anchors = [crop for group in self.groups for crop in group]
        self.anchors = anchors[:max_anchors] if max_anchors else anchors
        self.intra_class = intra_class_similarities(self.groups, similarity)
        self.candidates: list[dict[str, Any]] = []

    def instance(self, factors: dict[str, float]) -> np.ndarray:
        params = scale_params(self.base, factors)
        return intra_instance_similarities(self.anchors, params, self.similarity, self.n_augment, self.seed)

    def __call__(self, factors: dict[str, float]) -> float:
        instance = self.instance(factors)
        value = float(self.distance(self.intra_class, instance))
        self.candidates.append(
            {"factors": dict(factors), "distance": value, "intra_instance_mean": float(instance.mean())}
        )
        return value


def _grid(
    objective: _Objective, factors: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), **_
) -> dict:
    scores = {f: objective(dict.fromkeys(AUGMENTATION_GROUPS, float(f))) for f in factors}
    best = min(scores, key=lambda f: (scores[f], f))
    return dict.fromkeys(AUGMENTATION_GROUPS, float(best))


def _stepwise(objective: _Objective, step: float = 0.5, max_factor: float = 8.0, **_) -> dict:
    floor = objective.intra_class.mean() - objective.intra_class.std()
    chosen = {}
    for group in AUGMENTATION_GROUPS:
        factor, keep = step, 0.0
        while factor <= max_factor + 1e-9:
            off = dict.fromkeys(AUGMENTATION_GROUPS, 0.0)
            off[group] = factor
            instance = objective.instance(off)
            objective.candidates.append({"factors": off, "intra_instance_mean": float(instance.mean())})
            if instance.mean() < floor:
                break
            keep, factor = factor, factor + step
        chosen[group] = keep
    return chosen


def _bayesian(
    objective: _Objective, max_factor: float = 6.0, n_init: int = 6, n_iter: int = 10, seed: int = 0, **_
) -> dict:
    from scipy.stats import norm
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    groups = list(AUGMENTATION_GROUPS)
    rng = np.random.default_rng(seed)
    xs = list(rng.uniform(0, max_factor, size=(n_init, len(groups))))
    ys = [objective(dict(zip(groups, x, strict=True))) for x in xs]
    kernel = ConstantKernel() * Matern(
        length_scale=np.full(len(groups), max_factor / 2), nu=2.5
    ) + WhiteKernel(1e-4)
    for _ in range(n_iter):
        gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed).fit(
            np.array(xs), np.array(ys)
        )
        pool = rng.uniform(0, max_factor, size=(2048, len(groups)))
        mean, std = gp.predict(pool, return_std=True)
        gain = min(ys) - mean
        z = gain / np.maximum(std, 1e-9)
        expected_improvement = gain * norm.cdf(z) + std * norm.pdf(z)
        x = pool[int(np.argmax(expected_improvement))]
        xs.append(x)
        ys.append(objective(dict(zip(groups, x, strict=True))))
    best = xs[int(np.argmin(ys))]
    return {g: float(v) for g, v in zip(groups, best, strict=True)}


STRATEGIES: dict[str, Callable[..., dict[str, float]]] = {
    "grid": _grid,
    "stepwise": _stepwise,
    "bayesian": _bayesian,
}


def search(
    groups: Sequence[Sequence[np.ndarray]],
    similarity: Similarity,
    distance: Callable[[np.ndarray, np.ndarray], float],
    strategy: str = "grid",
    base: AugmentationParams | None = None,
    n_augment: int = 4,
    seed: int = 0,
    max_anchors: int | None = 64,
    **strategy_kwargs: Any,
) -> SearchResult:
    """Search theta = ``scale_params(base, factors)`` matching the intra-class similarity distribution.

    Args:
        groups: pseudo-class groups of crops (H, W) in [0, 1]; groups with fewer than 2 crops are ignored.
        similarity: ``(crop, crop) -> float``, e.g. ``SIMILARITIES["ssim"]``.
        distance: ``(intra_class, intra_instance) -> float``, e.g. ``DISTANCES["wasserstein"]``.
        strategy: ``grid``, ``stepwise`` or ``bayesian`` (module docstring); ``strategy_kwargs`` go to it
            (grid: ``factors``; stepwise: ``step``, ``max_factor``; bayesian: ``max_factor``, ``n_init``,
            ``n_iter``).
        base: the theta whose ranges are scaled; default: the paper's augmentation with brightness and
            contrast 0.1 (so that they are searched too).
        n_augment: augmentations per anchor crop.
        seed: seed of the augmentation draws.
        max_anchors: at most this many anchor crops for the intra-instance distribution (None = all).
    """
    if strategy not in STRATEGIES:
        raise MedzooDataError("search strategy", repr(strategy), f"one of {sorted(STRATEGIES)}")
    base = base if base is not None else AugmentationParams(brightness=0.1, contrast=0.1)
    objective = _Objective(groups, base, similarity, distance, n_augment, seed, max_anchors)
    kwargs = {**strategy_kwargs, "seed": seed} if strategy == "bayesian" else strategy_kwargs
    factors = STRATEGIES[strategy](objective, **kwargs)
    instance = objective.instance(factors)
    return SearchResult(
        params=scale_params(base, factors),
        factors={k: float(v) for k, v in factors.items()},
        distance=float(distance(objective.intra_class, instance)),
        intra_class_mean=float(objective.intra_class.mean()),
        intra_class_std=float(objective.intra_class.std()),
        candidates=objective.candidates,
    )
