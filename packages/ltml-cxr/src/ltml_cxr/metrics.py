"""The paper's evaluation: mAP, AUC (macro/micro/weighted) and F1 (macro/micro) per frequency group."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from medzoo.metrics import (
    auroc,
    average_precision,
    f1_scores,
    group_classes_by_frequency,
    mean_average_precision,
)

__all__ = ["GROUPS", "frequency_groups", "long_tail_metrics", "per_class_average_precision"]

GROUPS = ("head", "medium", "tail", "all")


def frequency_groups(counts: Sequence[float], head_min: float = 10000, tail_below: float = 1000) -> dict:
    """Head (``count >= head_min``), medium, tail (``count < tail_below``) and all class indices.

    The paper's cuts on LTML-MIMIC-CXR are 10000 and 1000 training positives; smaller sets need others.
    """
    counts = np.asarray(counts, dtype=np.float64)
    groups = group_classes_by_frequency(counts, head_above=head_min - 0.5, tail_at_most=tail_below - 0.5)
    return {**groups, "all": np.arange(len(counts))}


def long_tail_metrics(
    targets: np.ndarray, logits: np.ndarray, groups: dict[str, np.ndarray]
) -> dict[str, float]:
    """Metrics of (N, C) 0/1 targets and (N, C) logits for every non-empty group.

    Keys ``<metric>_<group>``: ``mAP`` (mean per-class AP), ``auc_macro``, ``auc_micro``, ``auc_weighted``,
    ``f1_macro`` and ``f1_micro`` (positive = logit > 0). A class with no positive (or no negative) in
    ``targets`` is left out of mAP and AUC; a group whose value is undefined gives NaN.
    """
    metrics: dict[str, float] = {}
    for name in GROUPS:
        columns = groups.get(name, np.empty(0, dtype=np.int64))
        if len(columns) == 0:
            continue
        y, s = targets[:, columns], logits[:, columns]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # classes without positives are skipped
            metrics[f"mAP_{name}"] = mean_average_precision(y, s)
            for average in ("macro", "micro", "weighted"):
                metrics[f"auc_{average}_{name}"] = float(auroc(y, s, average=average))
        f1 = f1_scores(y, s, threshold=0.0)
        metrics[f"f1_macro_{name}"] = f1["macro"]
        metrics[f"f1_micro_{name}"] = f1["micro"]
    return metrics


def per_class_average_precision(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(C,) average precision per class of (N, C) targets and logits (NaN: a class with one label value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(average_precision(targets, logits, average=None), dtype=np.float64)
