"""Metric inputs that used to give numbers or raw errors: each now gives one clear MedzooDataError (a
ValueError), consistently across the metrics module."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.errors import MedzooDataError
from medzoo.metrics import dice, f1_scores, hd95, mean_radial_error, metric_per_group


def test_a_stray_255_needs_num_classes_instead_of_256_one_hot_channels() -> None:
    target = np.zeros((1, 8, 8), dtype=np.int64)
    pred = target.copy()
    pred[0, 0, 0] = 255
    with pytest.raises(MedzooDataError, match="label 255 with num_classes unset"):
        dice(pred, target)
    with pytest.raises(MedzooDataError, match=r"labels \[255\] outside \[0, 3\)"):
        dice(pred, target, num_classes=3)
    assert issubclass(MedzooDataError, ValueError)


def test_small_label_sets_are_still_inferred() -> None:
    target = np.array([[[0, 1], [2, 2]]])
    assert dice(target, target, reduction="mean") == pytest.approx(1.0)


@pytest.mark.parametrize("spacing", [0.0, -1.0, (1.0, 0.0), float("nan")])
def test_hd95_refuses_zero_negative_and_nan_spacing(spacing) -> None:
    masks = np.zeros((1, 6, 6), dtype=np.int64)
    masks[0, 2:4, 2:4] = 1
    with pytest.raises(MedzooDataError, match="finite positive mm"):
        hd95(masks, masks, spacing=spacing, num_classes=2)


def test_f1_refuses_empty_and_nan_inputs() -> None:
    with pytest.raises(MedzooDataError, match="empty inputs"):
        f1_scores(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(MedzooDataError, match="1 NaN"):
        f1_scores(np.array([[1.0, np.nan]]), np.array([[1.0, 0.0]]))


def test_mean_radial_error_refuses_nan_errors() -> None:
    with pytest.raises(MedzooDataError, match="1 NaN error"):
        mean_radial_error(np.array([[1.0, np.nan]]))
    assert mean_radial_error(np.array([[1.0, 3.0]])) == (2.0, 1.0)


def test_metric_per_group_refuses_missing_groups_and_empty_input() -> None:
    mean = lambda t, p: float(np.mean(p))  # noqa: E731
    with pytest.raises(MedzooDataError, match="1 None/NaN group"):
        metric_per_group(mean, np.ones(3), np.ones(3), np.array(["F", None, "M"], dtype=object))
    with pytest.raises(MedzooDataError, match="1 None/NaN group"):
        metric_per_group(mean, np.ones(2), np.ones(2), np.array([0.0, np.nan]))
    with pytest.raises(MedzooDataError, match="no samples"):
        metric_per_group(mean, np.ones(0), np.ones(0), np.array([]))
    assert metric_per_group(mean, np.ones(3), np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1])) == {
        0: 1.0,
        1: 2.5,
    }
