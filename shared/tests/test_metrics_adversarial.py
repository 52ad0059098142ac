"""Adversarial-detection metrics against scikit-learn's ROC curve, and the tie convention of tpr_at_tnr."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from medzoo.errors import MedzooDataError
from medzoo.metrics import detection_auroc, tpr_at_tnr


def _scores(seed, tied):
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=int(rng.integers(20, 300)))
    adv = rng.normal(1.0, 1.0, size=int(rng.integers(20, 300)))
    if tied:
        clean, adv = np.round(clean * 3), np.round(adv * 3)
    return clean, adv


def _sklearn_tpr_at_tnr(clean, adv, tnr):
    labels = np.r_[np.zeros(clean.size), np.ones(adv.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[clean, adv], drop_intermediate=False)
    return tpr[fpr <= 1 - tnr + 1e-12].max()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_detection_metrics_match_sklearn(seed, tied):
    clean, adv = _scores(seed, tied)
    labels = np.r_[np.zeros(clean.size), np.ones(adv.size)]
    assert detection_auroc(clean, adv) == pytest.approx(roc_auc_score(labels, np.r_[clean, adv]), abs=1e-6)
    for tnr in (0.8, 0.9, 0.95, 0.99, 1.0):
        expected = _sklearn_tpr_at_tnr(clean, adv, tnr)
        assert tpr_at_tnr(clean, adv, tnr) == pytest.approx(expected, abs=1e-6)


def test_tpr_at_tnr_threshold_and_ties():
    clean = np.arange(10.0)  # 0..9
    adv = np.array([8.0, 9.0, 10.0, 11.0])
    tpr, threshold = tpr_at_tnr(clean, adv, tnr=0.9, return_threshold=True)
    # 9 of 10 clean scores are <= 8, so t = 8; the adversarial score tied at 8 is missed.
    assert threshold == 8.0
    assert tpr == 0.75
    # 0.55 * 100 is 55.00000000000001 in floating point; the threshold is still the 55th smallest score.
    assert tpr_at_tnr(np.arange(100.0), np.array([54.0, 54.5]), tnr=0.55, return_threshold=True) == (
        0.5,
        54.0,
    )
    with pytest.raises(MedzooDataError, match="tnr"):
        tpr_at_tnr(clean, adv, tnr=0.0)
