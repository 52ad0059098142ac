"""Group-fairness summaries: a metric per protected group, the max-min gap and equity-scaled metrics.

The per-group values and the gap agree with ``fairlearn.metrics.MetricFrame`` (``by_group`` and
``difference(method="between_groups")``); fairlearn is only a test dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.metrics._convert import to_numpy

__all__ = ["equity_scaled_metric", "max_min_gap", "metric_per_group"]


def metric_per_group(
    metric: Callable[[np.ndarray, np.ndarray], float], y_true: Any, y_pred: Any, groups: Any
) -> dict[Any, float]:
    """Evaluate ``metric(y_true[g], y_pred[g])`` on the samples of each group ``g``.

    Args:
        metric: any ``f(y_true, y_pred) -> float``, e.g. ``sklearn.metrics.accuracy_score`` or
            ``lambda t, p: medzoo.metrics.auroc(t, p)``. For per-sample scores that are already computed
            (e.g. one Dice per image), pass them as ``y_pred`` and use ``lambda t, p: float(np.mean(p))``.
        y_true: (N, ...) targets; indexed along the first axis.
        y_pred: (N, ...) predictions or scores; indexed along the first axis.
        groups: (N,) protected attribute per sample (any hashable values, e.g. "F"/"M" or 0/1/2).

    Returns:
        ``{group: value}`` in sorted group order; keys are python scalars (numpy scalars are unwrapped).
    """
    yt, yp, g = to_numpy(y_true), to_numpy(y_pred), to_numpy(groups)
    if g.size == 0:
        raise MedzooDataError("metric_per_group", "no samples", "at least one sample")
    missing = [v for v in g.tolist() if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise MedzooDataError(
            "metric_per_group groups", f"{len(missing)} None/NaN group(s)", "a group per sample"
        )
    if g.ndim != 1 or yt.shape[:1] != g.shape or yp.shape[:1] != g.shape:
        raise MedzooDataError(
            "metric_per_group",
            f"y_true {yt.shape}, y_pred {yp.shape}, groups {g.shape}",
            "(N, ...) arrays and (N,) groups with the same N",
        )
    return {
        (key.item() if isinstance(key, np.generic) else key): float(metric(yt[g == key], yp[g == key]))
        for key in np.unique(g)
    }


def _values(per_group: Mapping[Any, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    values = per_group.values() if isinstance(per_group, Mapping) else per_group
    v = to_numpy(list(values) if isinstance(per_group, Mapping) else values, dtype=np.float64).ravel()
    if v.size == 0:
        raise MedzooDataError("per_group", "no groups", "at least one group value")
    return v


def max_min_gap(values: Mapping[Any, float] | Sequence[float] | np.ndarray) -> float:
    """Largest minus smallest group value (fairlearn's ``difference(method="between_groups")``).

    Args:
        values: per-group metric values, as the dict from :func:`metric_per_group` or a sequence.

    Returns:
        The gap >= 0. NaN group values are ignored (as pandas and fairlearn do); NaN if all are NaN.
    """
    v = _values(values)
    v = v[~np.isnan(v)]
    return float(v.max() - v.min()) if v.size else float("nan")


def equity_scaled_metric(
    overall: float, per_group: Mapping[Any, float] | Sequence[float] | np.ndarray, variant: str = "sum"
) -> float:
    """Equity-scaled metric ``ES = overall / (1 + delta)`` (Harvard-FairSeg's ES-Dice / ES-IoU).

    Args:
        overall: the metric on all samples together (e.g. mean Dice over the test set), higher = better.
        per_group: the metric within each group.
        variant: how the spread ``delta`` of the groups is measured:
            ``"sum"``: ``delta = sum_g |metric_g - overall|`` (the FairSeg definition, Tian et al. 2024);
            ``"std"``: ``delta = std_g(metric_g)``, the population std (``ddof=0``) of the group values.

    Returns:
        ES in [0, overall] for ``overall >= 0``; equals ``overall`` exactly when every group matches it.
    """
    v = _values(per_group)
    if variant == "sum":
        delta = float(np.sum(np.abs(v - overall)))
    elif variant == "std":
        delta = float(np.std(v))
    else:
        raise MedzooDataError("equity_scaled_metric", f"variant={variant!r}", "'sum' or 'std'")
    return float(overall) / (1.0 + delta)
