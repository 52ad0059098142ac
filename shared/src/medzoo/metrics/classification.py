"""Classification metrics for binary, multi-class and multi-label problems, written in numpy.

AUROC and average precision (AP) are computed here rather than imported so that the scikit-learn
cross-checks in the tests compare two independent implementations. Tie handling matches scikit-learn:

- AUROC is the Mann-Whitney statistic with average ranks for tied scores, which equals the trapezoidal
  area under the ROC curve (a tie between a positive and a negative counts 1/2).
- AP is ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (tied scores enter together), the
  step-wise definition of ``sklearn.metrics.average_precision_score`` (no interpolation).

Multi-label inputs are indicator arrays ``y_true`` (N, C) in {0, 1} with scores ``y_score`` (N, C) (any real
values: probabilities or logits; only their order matters). A class whose column holds a single label value
(no positives, or no negatives) has no defined AUROC/AP: it is *skipped* (NaN in per-class output, left out of
macro/weighted averages) and a ``RuntimeWarning`` names it. If every class is skipped the result is NaN.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.metrics._convert import check_same_shape, to_numpy

__all__ = [
    "auroc",
    "average_precision",
    "f1_scores",
    "group_classes_by_frequency",
    "mean_average_precision",
]

_AVERAGES = ("macro", "micro", "weighted", None)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group_of = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], values.size]
    # Positions start+1 .. end (1-based) share the mean rank (start + 1 + end) / 2.
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = group_rank[group_of]
    return ranks


def _binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    rank_sum = _average_ranks(score)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _binary_average_precision(y: np.ndarray, score: np.ndarray) -> float:
    order = np.argsort(-score, kind="mergesort")
    sorted_score, sorted_y = score[order], y[order]
    true_pos = np.cumsum(sorted_y)
    false_pos = np.cumsum(~sorted_y)
    # One operating point per distinct score: the last index of each run of ties.
    last_of_tie = np.r_[sorted_score[1:] != sorted_score[:-1], True]
    true_pos, false_pos = true_pos[last_of_tie], false_pos[last_of_tie]
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _prepare_scores(y_true: Any, y_score: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (bool labels, float scores), both (N,) or (N, C).

    A 1-D integer ``y_true`` with 2-D scores (N, C) is a single-label multi-class problem and is one-hot
    encoded (one-vs-rest, as scikit-learn's ``multi_class="ovr"``).
    """
    yt = to_numpy(y_true)
    ys = to_numpy(y_score, dtype=np.float64)
    if yt.ndim == 1 and ys.ndim == 2:
        labels = yt.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= ys.shape[1] or np.any(labels != yt)):
            raise MedzooDataError(
                where,
                f"class labels {np.unique(yt)[:8]}",
                f"integers in [0, {ys.shape[1]}) for (N, C) scores",
            )
        yt = np.eye(ys.shape[1], dtype=bool)[labels]
    check_same_shape(yt, ys, where, ("y_true", "y_score"))
    if yt.ndim not in (1, 2) or yt.shape[0] == 0:
        raise MedzooDataError(where, f"y_true of shape {yt.shape}", "(N,) or (N, C) with N >= 1")
    if not np.all((yt == 0) | (yt == 1)):
        raise MedzooDataError(where, f"y_true values {np.unique(yt)[:8]}", "binary labels in {0, 1}")
    if not np.all(np.isfinite(ys)):
        raise MedzooDataError(where, "non-finite scores (NaN or inf)", "finite scores")
    return yt.astype(bool), ys


def _score_metric(
    binary_fn, y_true: Any, y_score: Any, average: str | None, where: str
) -> float | np.ndarray:
    if average not in _AVERAGES:
        raise MedzooDataError(where, f"average={average!r}", f"one of {_AVERAGES}")
    yt, ys = _prepare_scores(y_true, y_score, where)
    if yt.ndim == 1 or average == "micro":
        yt, ys = yt.ravel(), ys.ravel()
        if yt.all() or not yt.any():
            warnings.warn(
                f"{where}: only one label value present; the metric is undefined (NaN)",
                RuntimeWarning,
                stacklevel=3,
            )
            return float("nan")
        return binary_fn(yt, ys)
    num_pos = yt.sum(axis=0)
    defined = (num_pos > 0) & (num_pos < yt.shape[0])
    if not defined.all():
        warnings.warn(
            f"{where}: classes {np.flatnonzero(~defined).tolist()} have a single label value and are skipped",
            RuntimeWarning,
            stacklevel=3,
        )
    per_class = np.full(yt.shape[1], np.nan)
    for c in np.flatnonzero(defined):
        per_class[c] = binary_fn(yt[:, c], ys[:, c])
    if average is None:
        return per_class
    if not defined.any():
        return float("nan")
    weights = num_pos[defined] if average == "weighted" else None
    return float(np.average(per_class[defined], weights=weights))


def auroc(y_true: Any, y_score: Any, average: str | None = "macro") -> float | np.ndarray:
    """Area under the ROC curve.

    Args:
        y_true: binary labels (N,), multi-label indicators (N, C) in {0, 1}, or integer class labels (N,)
            in [0, C) together with (N, C) scores (one-vs-rest).
        y_score: real-valued scores, higher = more likely positive; shape (N,) or (N, C).
        average: for (N, C) inputs: ``"macro"`` (mean over defined classes), ``"weighted"`` (weighted by
            the number of positives), ``"micro"`` (all entries pooled) or ``None`` (per-class array (C,),
            NaN for skipped classes). Ignored for binary (N,) inputs.

    Returns:
        AUROC in [0, 1] (a float, or a (C,) array for ``average=None``); NaN when undefined.
    """
    return _score_metric(_binary_auroc, y_true, y_score, average, "auroc")


def average_precision(y_true: Any, y_score: Any, average: str | None = "macro") -> float | np.ndarray:
    """Average precision (area under the step-wise precision-recall curve).

    Same inputs, averaging and skipping rules as :func:`auroc`. Returns AP in [0, 1].
    """
    return _score_metric(_binary_average_precision, y_true, y_score, average, "average_precision")


def mean_average_precision(y_true: Any, y_score: Any) -> float:
    """mAP: the macro mean of per-class average precision over classes with both label values.

    Args:
        y_true: (N, C) multi-label indicators in {0, 1}.
        y_score: (N, C) scores.

    Returns:
        mAP in [0, 1], or NaN if no class has both positives and negatives.
    """
    return float(average_precision(y_true, y_score, average="macro"))


def f1_scores(
    y_true: Any,
    y_pred: Any,
    *,
    threshold: float | None = None,
    num_classes: int | None = None,
    zero_division: float = 0.0,
) -> dict[str, Any]:
    """F1 scores: macro, micro and per class.

    Args:
        y_true: multi-label indicators (N, C) in {0, 1}, or class labels (N,) (binary or multi-class).
        y_pred: predictions of the same shape: indicators / labels, or scores when ``threshold`` is given.
        threshold: if given, ``y_pred`` holds scores and a prediction is positive when ``score > threshold``
            (e.g. ``threshold=0.0`` for logits, as in LTML-MIMIC-CXR). Only for (N, C) / binary inputs.
        num_classes: for 1-D label inputs, score the classes ``0 .. num_classes - 1``; by default the sorted
            union of the labels present in ``y_true`` and ``y_pred`` (scikit-learn's convention).
        zero_division: F1 of a class with no true and no predicted positives (scikit-learn's default 0).

    Returns:
        ``{"macro": float, "micro": float, "per_class": np.ndarray (C,)}``, values in [0, 1]. 1-D inputs are
        scored one-vs-rest per label, so ``"micro"`` equals accuracy there, and ``"per_class"`` follows the
        sorted label order (for binary 1-D input that is F1 of class 0, then of class 1).
    """
    yt = to_numpy(y_true)
    yp = to_numpy(y_pred)
    check_same_shape(yt, yp, "f1_scores", ("y_true", "y_pred"))
    if yt.size == 0:
        raise MedzooDataError("f1_scores", "empty inputs", "at least one sample")
    for name, arr in (("y_true", yt), ("y_pred", yp)):
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            raise MedzooDataError(f"f1_scores.{name}", f"{int(np.isnan(arr).sum())} NaN value(s)", "no NaN")
    if threshold is not None:
        yp = (yp.astype(np.float64) > threshold).astype(np.int64)
    if yt.ndim == 2:
        for name, arr in (("y_true", yt), ("y_pred", yp)):
            if not np.all((arr == 0) | (arr == 1)):
                raise MedzooDataError(
                    f"f1_scores.{name}", f"values {np.unique(arr)[:8]}", "indicators in {0, 1}"
                )
        yt, yp = yt.astype(bool), yp.astype(bool)
    elif yt.ndim == 1:
        labels = np.arange(num_classes) if num_classes is not None else np.union1d(yt, yp)
        yt, yp = yt[:, None] == labels[None], yp[:, None] == labels[None]
    else:
        raise MedzooDataError("f1_scores", f"labels of shape {yt.shape}", "(N,) labels or (N, C) indicators")
    true_pos = np.sum(yt & yp, axis=0).astype(np.float64)
    false_pos = np.sum(~yt & yp, axis=0)
    false_neg = np.sum(yt & ~yp, axis=0)
    denominator = 2 * true_pos + false_pos + false_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(denominator > 0, 2 * true_pos / denominator, zero_division)
    micro_denominator = denominator.sum()
    micro = 2 * true_pos.sum() / micro_denominator if micro_denominator > 0 else zero_division
    return {"macro": float(per_class.mean()), "micro": float(micro), "per_class": per_class}


def group_classes_by_frequency(
    counts: Any, *, head_above: float, tail_at_most: float
) -> dict[str, np.ndarray]:
    """Split classes into head / medium / tail by their (training) positive counts.

    Args:
        counts: (C,) number of positives per class (usually in the training split).
        head_above: a class is "head" when ``count > head_above``. LTML-MIMIC-CXR's head (>= 10000) is
            ``head_above=9999``; CARZero's head (> 65th percentile) is
            ``head_above=np.percentile(counts, 65)``.
        tail_at_most: a class is "tail" when ``count <= tail_at_most`` (LTML: ``< 1000`` -> 999;
            CARZero: ``<= 10`` -> 10). Must be <= ``head_above``.

    Returns:
        ``{"head": idx, "medium": idx, "tail": idx}``: sorted int64 class indices; every class is in exactly
        one group ("medium" = the rest).
    """
    c = to_numpy(counts, dtype=np.float64)
    if c.ndim != 1:
        raise MedzooDataError("group_classes_by_frequency", f"counts of shape {c.shape}", "(C,) counts")
    if tail_at_most > head_above:
        raise MedzooDataError(
            "group_classes_by_frequency",
            f"tail_at_most={tail_at_most} > head_above={head_above}",
            "tail_at_most <= head_above",
        )
    head = c > head_above
    tail = c <= tail_at_most
    return {
        "head": np.flatnonzero(head),
        "medium": np.flatnonzero(~head & ~tail),
        "tail": np.flatnonzero(tail),
    }
