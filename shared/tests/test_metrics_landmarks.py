"""Landmark metrics: radial errors against scikit-learn, MRE/SDR on known answers (strict SDR boundary)."""

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import paired_euclidean_distances

from medzoo.errors import MedzooDataError
from medzoo.metrics import mean_radial_error, radial_errors, successful_detection_rate


def test_radial_errors_match_sklearn_with_anisotropic_spacing_per_image():
    rng = np.random.default_rng(0)
    pred, target = rng.uniform(0, 500, (2, 5, 19, 2))
    spacing = rng.uniform(0.05, 0.2, (5, 2))  # (x, y) mm/px per image
    errors = radial_errors(pred, target, spacing=spacing)
    scale = np.repeat(spacing, 19, axis=0)
    expected = paired_euclidean_distances(pred.reshape(-1, 2) * scale, target.reshape(-1, 2) * scale)
    assert errors.shape == (5, 19)
    np.testing.assert_allclose(errors.ravel(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("spacing", "factor"),
    [(None, 1.0), (0.1, 0.1), (np.array([0.1, 0.2]), np.array([[0.1], [0.2]]))],
)
def test_radial_errors_spacing_forms(spacing, factor):
    pred = np.zeros((2, 1, 2))
    target = np.tile(np.array([3.0, 4.0]), (2, 1, 1))  # 3-4-5 triangle: 5 px
    np.testing.assert_allclose(radial_errors(pred, target, spacing), 5.0 * np.broadcast_to(factor, (2, 1)))


def test_radial_errors_accept_torch_and_single_image():
    errors = radial_errors(torch.tensor([[0.0, 0.0]]), torch.tensor([[6.0, 8.0]]), spacing=0.5)
    np.testing.assert_allclose(errors, [[5.0]])


def test_radial_errors_reject_bad_shapes():
    with pytest.raises(MedzooDataError, match="equal shapes"):
        radial_errors(np.zeros((1, 3, 2)), np.zeros((1, 4, 2)))
    with pytest.raises(MedzooDataError, match="spacing"):
        radial_errors(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), spacing=np.ones(3))


def test_mean_radial_error_is_mean_and_population_std():
    mean, std = mean_radial_error(np.array([[1.0, 2.0], [3.0, 6.0]]))
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(np.sqrt((4 + 1 + 0 + 9) / 4))


def test_sdr_is_strict_at_the_boundary():
    errors = np.array([1.0, 2.0, 2.0, 2.5, 3.9999, 4.0, np.nan, 10.0])
    sdr = successful_detection_rate(errors, radii=(2.0, 2.5, 3.0, 4.0))
    # Exactly 2.0 is NOT within 2 mm; NaN counts as a failure.
    assert sdr == {2.0: 1 / 8, 2.5: 3 / 8, 3.0: 4 / 8, 4.0: 5 / 8}
    assert successful_detection_rate(errors, radii=[2.0000001])[2.0000001] == 3 / 8
