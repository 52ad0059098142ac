"""Classification metrics: our numpy AUROC / AP / F1 against scikit-learn on random inputs with ties."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medzoo.errors import MedzooDataError
from medzoo.metrics import (
    auroc,
    average_precision,
    f1_scores,
    group_classes_by_frequency,
    mean_average_precision,
)

TOL = 1e-6


def _binary_case(seed: int, tied: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[:2] = [True, False]  # both label values present
    score = rng.normal(size=n) + y * rng.uniform(0, 2)
    if tied:
        score = np.round(score * 2) / 2  # many ties, also across classes
    return y.astype(int), score


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_binary_auroc_and_ap_match_sklearn(seed, tied):
    y, score = _binary_case(seed, tied)
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=TOL)
    assert average_precision(y, score) == pytest.approx(average_precision_score(y, score), abs=TOL)


def _multilabel_case(seed: int, n: int = 120, c: int = 7):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.05, 0.6, c)).astype(int)
    y[0], y[1] = 1, 0  # every class has both values
    score = np.round(rng.normal(size=(n, c)) + y, 1)
    return y, score


@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
def test_multilabel_auroc_and_ap_match_sklearn(average):
    for seed in range(3):
        y, score = _multilabel_case(seed)
        np.testing.assert_allclose(
            auroc(y, score, average=average), roc_auc_score(y, score, average=average), atol=TOL
        )
        np.testing.assert_allclose(
            average_precision(y, score, average=average),
            average_precision_score(y, score, average=average),
            atol=TOL,
        )


def test_map_is_macro_ap_and_accepts_torch():
    y, score = _multilabel_case(3)
    expected = average_precision_score(y, score, average="macro")
    assert mean_average_precision(torch.from_numpy(y), torch.from_numpy(score)) == pytest.approx(
        expected, abs=TOL
    )


def test_multiclass_one_vs_rest_auroc_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 90)
    logits = rng.normal(size=(90, 4)) + np.eye(4)[labels]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(labels, prob, multi_class="ovr", average="macro")
    assert auroc(labels, prob) == pytest.approx(expected, abs=TOL)


def test_single_valued_classes_are_skipped_with_a_warning():
    y, score = _multilabel_case(4)
    y[:, 2] = 0  # no positives
    y[:, 5] = 1  # no negatives
    keep = [0, 1, 3, 4, 6]
    with pytest.warns(RuntimeWarning, match=r"\[2, 5\]"):
        per_class = auroc(y, score, average=None)
    assert np.isnan(per_class[[2, 5]]).all()
    np.testing.assert_allclose(
        per_class[keep], roc_auc_score(y[:, keep], score[:, keep], average=None), atol=TOL
    )
    with pytest.warns(RuntimeWarning):
        macro_ap = mean_average_precision(y, score)
    assert macro_ap == pytest.approx(average_precision_score(y[:, keep], score[:, keep]), abs=TOL)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(auroc(np.ones(5), np.arange(5.0)))


def test_score_metrics_reject_bad_labels_and_scores():
    with pytest.raises(MedzooDataError, match=r"\{0, 1\}"):
        auroc(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(MedzooDataError, match="non-finite"):
        average_precision(np.array([0, 1]), np.array([np.nan, 0.2]))
    with pytest.raises(MedzooDataError, match="average"):
        auroc(np.array([0, 1]), np.array([0.1, 0.2]), average="samples")


def test_multilabel_f1_matches_sklearn():
    rng = np.random.default_rng(5)
    y = (rng.random((80, 9)) < 0.3).astype(int)
    logits = rng.normal(size=(80, 9)) + 2 * y - 1
    y[:, 4] = 0
    logits[:, 4] = -1.0  # class with no positives and no predictions: zero_division
    pred = (logits > 0).astype(int)
    f1 = f1_scores(y, logits, threshold=0.0)
    assert f1["macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=TOL)
    assert f1["micro"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0), abs=TOL)
    np.testing.assert_allclose(f1["per_class"], f1_score(y, pred, average=None, zero_division=0), atol=TOL)
    assert f1_scores(y, pred, zero_division=1.0)["per_class"][4] == 1.0


@pytest.mark.parametrize("num_labels", [2, 5])
def test_label_f1_matches_sklearn(num_labels):
    rng = np.random.default_rng(num_labels)
    y = rng.integers(0, num_labels, 60)
    pred = np.where(rng.random(60) < 0.6, y, rng.integers(0, num_labels, 60))
    f1 = f1_scores(y, pred)
    for average in ("macro", "micro"):
        assert f1[average] == pytest.approx(f1_score(y, pred, average=average), abs=TOL)
    np.testing.assert_allclose(f1["per_class"], f1_score(y, pred, average=None), atol=TOL)
    padded = f1_scores(y, pred, num_classes=num_labels + 2)
    assert padded["per_class"].shape == (num_labels + 2,)
    labels = list(range(num_labels + 2))
    expected = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    assert padded["macro"] == pytest.approx(expected, abs=TOL)


def test_group_classes_by_frequency_boundaries():
    # LTML-MIMIC-CXR: head >= 10000, medium 1000..9999, tail < 1000.
    counts = np.array([10000, 9999, 1000, 999, 0, 50000])
    groups = group_classes_by_frequency(counts, head_above=9999, tail_at_most=999)
    np.testing.assert_array_equal(groups["head"], [0, 5])
    np.testing.assert_array_equal(groups["medium"], [1, 2])
    np.testing.assert_array_equal(groups["tail"], [3, 4])
    # CARZero: head above the 65th percentile, tail <= 10; every class in exactly one group.
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 500, 40)
    groups = group_classes_by_frequency(counts, head_above=np.percentile(counts, 65), tail_at_most=10)
    assert sorted(np.concatenate(list(groups.values())).tolist()) == list(range(40))
    assert (counts[groups["head"]] > np.percentile(counts, 65)).all()
    assert (counts[groups["tail"]] <= 10).all()
    with pytest.raises(MedzooDataError, match="tail_at_most"):
        group_classes_by_frequency(counts, head_above=5, tail_at_most=10)
