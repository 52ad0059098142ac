"""Fairness metrics against fairlearn's MetricFrame, plus equity-scaled metrics on known answers."""

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

from medzoo.errors import MedzooDataError
from medzoo.metrics import auroc, equity_scaled_metric, max_min_gap, metric_per_group

TOL = 1e-6


def _case(seed):
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["asian", "black", "white"]), 300)
    y = rng.integers(0, 2, 300)
    score = rng.normal(size=300) + y * (1 + (groups == "white"))
    return y, score, groups


@pytest.mark.parametrize("seed", range(3))
def test_per_group_and_gap_match_fairlearn(seed):
    y, score, groups = _case(seed)
    pred = (score > 0.5).astype(int)
    for metric, y_pred in ((accuracy_score, pred), (recall_score, pred), (auroc, score)):
        frame = MetricFrame(metrics=metric, y_true=y, y_pred=y_pred, sensitive_features=groups)
        ours = metric_per_group(metric, y, y_pred, groups)
        assert list(ours) == list(frame.by_group.index)
        np.testing.assert_allclose(list(ours.values()), frame.by_group.to_numpy(), atol=TOL)
        assert max_min_gap(ours) == pytest.approx(frame.difference(method="between_groups"), abs=TOL)
    frame = MetricFrame(metrics=roc_auc_score, y_true=y, y_pred=score, sensitive_features=groups)
    by_group = metric_per_group(auroc, y, score, groups)
    overall = frame.overall
    delta_sum = (frame.by_group - overall).abs().sum()
    delta_std = frame.by_group.std(ddof=0)
    assert equity_scaled_metric(overall, by_group, "sum") == pytest.approx(overall / (1 + delta_sum), abs=TOL)
    assert equity_scaled_metric(overall, by_group, "std") == pytest.approx(overall / (1 + delta_std), abs=TOL)


def test_equity_scaled_metric_known_values():
    per_group = {"F": 0.7, "M": 0.9}
    assert equity_scaled_metric(0.8, per_group, "sum") == pytest.approx(0.8 / 1.2)
    assert equity_scaled_metric(0.8, [0.7, 0.9], "std") == pytest.approx(0.8 / 1.1)
    assert equity_scaled_metric(0.8, [0.8, 0.8, 0.8]) == 0.8
    with pytest.raises(MedzooDataError, match="variant"):
        equity_scaled_metric(0.8, [0.7], "max")


def test_per_sample_scores_grouped_with_integer_groups():
    # E.g. one Dice per image grouped by a coded attribute: keys come back as python ints.
    dice_per_image = np.array([0.9, 0.8, 0.5, 0.7, 0.6])
    groups = np.array([1, 1, 0, 0, 2])
    means = metric_per_group(lambda t, p: float(np.mean(p)), dice_per_image, dice_per_image, groups)
    assert means == pytest.approx({0: 0.6, 1: 0.85, 2: 0.6})
    assert all(type(k) is int for k in means)
    assert max_min_gap([0.6, np.nan, 0.85]) == pytest.approx(0.25)


def test_metric_per_group_rejects_mismatched_lengths():
    with pytest.raises(MedzooDataError, match="groups"):
        metric_per_group(accuracy_score, np.zeros(4), np.zeros(4), np.zeros(3))
