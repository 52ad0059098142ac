"""The per-group metrics equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from ltml_cxr.metrics import frequency_groups, long_tail_metrics


def test_frequency_groups_cuts_are_inclusive_as_in_the_paper():
    groups = frequency_groups([10000, 9999, 1000, 999, 50000], head_min=10000, tail_below=1000)
    assert groups["head"].tolist() == [0, 4] and groups["medium"].tolist() == [1, 2]
    assert groups["tail"].tolist() == [3] and groups["all"].tolist() == [0, 1, 2, 3, 4]


def test_long_tail_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.03]).astype(int)
    logits = rng.normal(size=(200, 6)) + 1.5 * targets - 1.0
    counts = targets.sum(axis=0)
    groups = frequency_groups(counts, head_min=np.sort(counts)[-2], tail_below=np.sort(counts)[2])
    assert all(len(columns) == 2 for name, columns in groups.items() if name != "all")
    metrics = long_tail_metrics(targets, logits, groups)
    for name, columns in groups.items():
        y, s = targets[:, columns], logits[:, columns]
        assert metrics[f"mAP_{name}"] == pytest.approx(average_precision_score(y, s, average="macro"))
        for average in ("macro", "micro", "weighted"):
            assert metrics[f"auc_{average}_{name}"] == pytest.approx(roc_auc_score(y, s, average=average))
        for average in ("macro", "micro"):
            expected = f1_score(y, (s > 0).astype(int), average=average, zero_division=0)
            assert metrics[f"f1_{average}_{name}"] == pytest.approx(expected)


def test_empty_group_is_left_out():
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    metrics = long_tail_metrics(targets, targets * 2.0 - 1, frequency_groups([2, 2], 10, 1))
    assert "mAP_head" not in metrics and "mAP_tail" not in metrics and metrics["mAP_all"] == 1.0
