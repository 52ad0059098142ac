"""Similarities and distances against known answers, scipy and scikit-learn."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from sklearn.metrics import mutual_info_score

from fewshot_augsearch.similarity import (
    FeatureCosine,
    kl_divergence,
    mean_std_distance,
    mutual_information,
    ssim,
    wasserstein1,
)
from medzoo.errors import MedzooDataError


def test_wasserstein_matches_scipy_and_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(0.5, 2.0, size=37)
    assert wasserstein1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-9)
    assert wasserstein1(a, a + 0.3) == pytest.approx(0.3, rel=1e-9)
    assert wasserstein1(a, a) == 0.0


def test_kl_known_answer():
    # Two bins on [0, 1]: a = 3/4 in the low bin, b = 1/4.
    a, b = [0.0, 0.1, 0.2, 1.0], [0.0, 0.9, 0.95, 1.0]
    p, q = np.array([0.75, 0.25]), np.array([0.25, 0.75])
    assert kl_divergence(a, b, bins=2, eps=0) == pytest.approx(float(np.sum(p * np.log(p / q))))
    assert kl_divergence(a, a, bins=2) == pytest.approx(0.0)


def test_mean_std_known_answer():
    assert mean_std_distance([0, 2], [2, 2]) == pytest.approx(abs(1 - 2) + abs(1 - 0))
    with pytest.raises(MedzooDataError):
        mean_std_distance([], [1.0])


def test_mutual_information_known_answers_and_sklearn():
    half = np.zeros((8, 8))
    half[:, 4:] = 1.0
    assert mutual_information(half, half) == pytest.approx(np.log(2))
    rng = np.random.default_rng(0)
    a, b = rng.random((32, 32)), rng.random((32, 32))
    ref = mutual_info_score(
        np.minimum((a * 32).astype(int), 31).ravel(), np.minimum((b * 32).astype(int), 31).ravel()
    )
    assert mutual_information(a, b) == pytest.approx(ref, rel=1e-6)


def test_ssim_is_one_for_identical_and_drops_with_noise():
    rng = np.random.default_rng(0)
    image = np.clip(np.linspace(0, 1, 32)[None] * np.ones((32, 1)), 0, 1)
    assert ssim(image, image) == pytest.approx(1.0)
    noisy = [np.clip(image + s * rng.standard_normal(image.shape), 0, 1) for s in (0.05, 0.2)]
    assert 1.0 > ssim(image, noisy[0]) > ssim(image, noisy[1])
    with pytest.raises(MedzooDataError):
        ssim(image, image[:16])


def test_feature_cosine_known_answer():
    similarity = FeatureCosine(lambda x: torch.cat([x, 1 - x], dim=1))  # channel means (m, 1 - m)
    a, b = np.ones((4, 4)), np.zeros((4, 4))
    assert similarity(a, b) == pytest.approx(0.0, abs=1e-6)  # (1, 0) vs (0, 1)
    assert similarity(a, a) == pytest.approx(1.0)
