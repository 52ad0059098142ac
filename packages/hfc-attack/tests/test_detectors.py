from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from hfc_attack.detectors import (
    DETECTORS,
    BUDetector,
    DetectorInputs,
    LayerFusionDetector,
    SVMDetector,
    _LogisticHead,
    class_means_and_precision,
    kernel_density_scores,
    lid_scores,
    load_detectors,
    mahalanobis_scores,
    save_detectors,
)
from medzoo.errors import MedzooDataError
from medzoo.metrics import detection_auroc, tpr_at_tnr


def _inputs(rng: np.random.Generator, n: int, shift: float) -> DetectorInputs:
    feats = {"a": rng.normal(size=(n, 4)) + shift, "b": rng.normal(size=(n, 3)) * (1 + shift)}
    return DetectorInputs(feats, rng.integers(0, 2, n), rng.random(n) + shift)


def test_kernel_density_equals_sklearn():
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(40, 3)), np.repeat([0, 1], 20)
    x, pred = rng.normal(size=(7, 3)), np.array([0, 1, 1, 0, 1, 0, 0])
    ours = kernel_density_scores(train, labels, {0: 0.7, 1: 1.3}, x, pred)
    for cls, h in ((0, 0.7), (1, 1.3)):
        kde = KernelDensity(kernel="gaussian", bandwidth=h).fit(train[labels == cls])
        np.testing.assert_allclose(ours[pred == cls], -kde.score_samples(x[pred == cls]), rtol=1e-10)


def test_lid_known_answer():
    # Reference points at distances 1, 2, 4 from x: LID = -1 / mean(log(1/4), log(2/4), log(4/4)).
    reference = np.array([[1.0, 0], [0, 2.0], [-4.0, 0], [100.0, 0]])
    expected = -1 / np.mean(np.log([0.25, 0.5, 1.0]))
    np.testing.assert_allclose(lid_scores(reference, np.zeros((1, 2)), k=3), [expected])
    # A point of the reference does not count as its own neighbour.
    np.testing.assert_allclose(
        lid_scores(reference, reference[:1], k=2), lid_scores(reference[1:], reference[:1], k=2)
    )


def test_mahalanobis_known_answer():
    x = np.array([[0.0, 0], [2, 0], [10, 10], [12, 10]])
    means, precision = class_means_and_precision(x, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(means, [[1, 0], [11, 10]])
    # Shared covariance diag(1, 0) -> pinv diag(1, 0): the score is min_c (x_0 - mu_c0)^2.
    np.testing.assert_allclose(precision, [[1, 0], [0, 0]], atol=1e-12)
    np.testing.assert_allclose(mahalanobis_scores(means, precision, np.array([[4.0, 3.0]])), [9.0])


def test_logistic_head_and_svm_equal_sklearn():
    rng = np.random.default_rng(1)
    clean, adv = rng.normal(size=(30, 3)), rng.normal(size=(30, 3)) + 1
    head = _LogisticHead().fit(clean, adv)
    x = np.concatenate([clean, adv])
    y = np.r_[np.zeros(30), np.ones(30)]
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(max_iter=1000).fit(scaler.transform(x), y)
    np.testing.assert_allclose(head(x), lr.decision_function(scaler.transform(x)), rtol=1e-10)
    svm = SVMDetector("a").fit(
        DetectorInputs({"a": clean}, np.zeros(30)), DetectorInputs({"a": adv}, np.zeros(30)), y
    )
    reference = SVC(kernel="rbf", gamma="scale").fit(scaler.transform(x), y)
    np.testing.assert_allclose(
        svm.score(DetectorInputs({"a": x}, np.zeros(60))),
        reference.decision_function(scaler.transform(x)),
        rtol=1e-6,
        atol=1e-8,
    )


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detectors_separate_shifted_features_and_round_trip(name, tmp_path):
    rng = np.random.default_rng(2)
    clean, adv = _inputs(rng, 60, 0.0), _inputs(rng, 60, 1.5)
    labels = clean.pred.copy()
    test_clean, test_adv = _inputs(rng, 40, 0.0), _inputs(rng, 40, 1.5)
    if name == "mahalanobis":  # pre-processed features come from the model; here: the features themselves
        for inputs in (clean, adv, test_clean, test_adv):
            inputs.preprocessed = inputs.features
    detector = DETECTORS[name]().fit(clean, adv, labels)
    scores = detector.score(test_clean), detector.score(test_adv)
    assert detection_auroc(*scores) > 0.8
    loaded = load_detectors(save_detectors(tmp_path / "d.npz", {name: detector}))[name]
    np.testing.assert_allclose(loaded.score(test_adv), scores[1], rtol=1e-6)


def test_detection_auroc_equals_sklearn_on_detector_scores():
    rng = np.random.default_rng(3)
    clean, adv = _inputs(rng, 50, 0.0), _inputs(rng, 50, 0.5)
    detector = LayerFusionDetector("mahalanobis").fit(clean, adv, clean.pred)
    c, a = detector.score(clean), detector.score(adv)
    assert detection_auroc(c, a) == pytest.approx(
        roc_auc_score(np.r_[np.zeros(50), np.ones(50)], np.r_[c, a])
    )
    # TPR at 90% TNR: the fraction of adversarial scores above the 45th smallest clean score.
    assert tpr_at_tnr(c, a, 0.9) == pytest.approx(np.mean(a > np.sort(c)[44]))


def test_bad_detector_inputs(tmp_path):
    with pytest.raises(MedzooDataError, match="kd, lid or mahalanobis"):
        LayerFusionDetector("odin")
    with pytest.raises(MedzooDataError, match="uncertainty"):
        BUDetector().score(DetectorInputs({"a": np.zeros((2, 2))}, np.zeros(2)))
    with pytest.raises(MedzooDataError, match="no such file"):
        load_detectors(tmp_path / "missing.npz")


def test_mahalanobis_preprocessing_moves_features_toward_the_class_means(tiny_model, images):
    from hfc_attack.pipeline import detector_inputs, mahalanobis_preprocess

    # 96 images for 16-channel layers: a well-determined shared covariance.
    x = torch.cat([images, torch.rand(92, 3, 32, 32, generator=torch.Generator().manual_seed(5))])
    inputs = detector_inputs(tiny_model, x, max_channels=16)
    detector = LayerFusionDetector("mahalanobis", noise=0.0005).fit_statistics(inputs, np.arange(96) % 2)
    stepped = mahalanobis_preprocess(tiny_model, x, detector, max_channels=16)
    for i, layer in enumerate(detector.layers):
        means, precision = detector.params[f"{i}.means"], detector.params[f"{i}.precision"]
        before = mahalanobis_scores(means, precision, inputs.features[layer])
        after = mahalanobis_scores(means, precision, stepped[layer])
        assert after.mean() < before.mean(), layer
    with pytest.raises(MedzooDataError, match="pre-processed"):
        detector.layer_scores(inputs)
