"""Heatmap targets and decoding: known values, UOD's alpha variant and encode -> decode round trips."""

import math

import numpy as np
import pytest
import torch

from medzoo.errors import MedzooDataError
from medzoo.heatmaps import decode_heatmaps, gaussian_heatmaps

SIZE = (48, 64)  # (H, W)


def _random_coords(seed, batch=4, num_landmarks=6, margin=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, num_landmarks, 2, generator=g, dtype=dtype)
    # x in [margin, W - 1 - margin], y in [margin, H - 1 - margin]: inside the span of pixel centres
    span = torch.tensor([SIZE[1] - 1 - 2 * margin, SIZE[0] - 1 - 2 * margin], dtype=dtype)
    return margin + u * span


def test_gaussian_matches_the_formula_with_x_as_column():
    coords = torch.tensor([[[10.25, 20.5], [3.0, 7.0]]])
    heatmaps = gaussian_heatmaps(coords, SIZE, sigma=2.5, dtype=torch.float64)
    assert heatmaps.shape == (1, 2, *SIZE)
    rows, cols = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    expected = np.exp(-((cols - 10.25) ** 2 + (rows - 20.5) ** 2) / (2 * 2.5**2))
    np.testing.assert_allclose(heatmaps[0, 0].numpy(), expected, rtol=1e-12, atol=1e-15)
    # A landmark on a pixel centre peaks at exactly 1 on pixel [row=y, col=x].
    assert heatmaps[0, 1, 7, 3] == 1.0
    assert heatmaps[0, 1, 7, 3 + 2] == pytest.approx(math.exp(-(2**2) / (2 * 2.5**2)))


def test_alpha_variant_known_values():
    # UOD: h = alpha ** exp(-d^2 / (2 sigma^2)), values <= 1.05 set to 0 (sigma 10, alpha 10).
    sigma, alpha = 10.0, 10.0
    coords = torch.tensor([[[0.0, 0.0]]])
    h = gaussian_heatmaps(coords, (1, 40), sigma, alpha=alpha, dtype=torch.float64)[0, 0, 0]
    assert h[0] == pytest.approx(10.0)  # d = 0: alpha
    assert h[10] == pytest.approx(4.041389, abs=1e-6)  # d = sigma: 10 ** exp(-0.5)
    assert h[20] == pytest.approx(1.365637, abs=1e-6)  # d = 2 sigma: 10 ** exp(-2)
    assert h[27] == pytest.approx(1.061992, abs=1e-6)  # 10 ** exp(-3.645), just above the cut-off
    assert h[28] == 0.0  # 10 ** exp(-3.92) = 1.0467 <= 1.05
    assert h[30] == 0.0  # d = 3 sigma: 1.0259 <= 1.05


def test_per_landmark_sigma_and_missing_landmarks():
    coords = torch.tensor([[[20.0, 20.0], [30.0, 10.0], [float("nan"), 5.0]]])
    heatmaps = gaussian_heatmaps(coords, SIZE, sigma=torch.tensor([1.0, 4.0, 2.0]))
    assert heatmaps[0, 0, 20, 21] == pytest.approx(math.exp(-0.5))
    assert heatmaps[0, 1, 10, 34] == pytest.approx(math.exp(-0.5))
    assert torch.count_nonzero(heatmaps[0, 2]) == 0
    with pytest.raises(MedzooDataError, match="sigma"):
        gaussian_heatmaps(coords, SIZE, sigma=0.0)
    with pytest.raises(MedzooDataError, match=r"\(B, K, 2\)"):
        gaussian_heatmaps(coords[0], SIZE, sigma=1.0)


@pytest.mark.parametrize("sigma", [0.8, 1.5, 3.0, 6.0])
@pytest.mark.parametrize("refine", ["log_quadratic", "quadratic", "quarter_offset"])
def test_round_trip_below_half_a_pixel(sigma, refine):
    # quarter_offset cannot tell the side of a peak on a border pixel, so it is checked away from borders.
    coords = _random_coords(int(sigma * 10), margin=1.0 if refine == "quarter_offset" else 0.0)
    heatmaps = gaussian_heatmaps(coords, SIZE, sigma)  # float32
    decoded = decode_heatmaps(heatmaps, refine=refine)
    error = torch.linalg.vector_norm(decoded.double() - coords, dim=-1)
    assert error.max() < 0.5
    # The integer argmax alone is not that good: refinement is what gets us there.
    raw_error = torch.linalg.vector_norm(decode_heatmaps(heatmaps, refine="none").double() - coords, dim=-1)
    assert error.mean() < raw_error.mean()


@pytest.mark.parametrize("sigma", [1.0, 2.0, 5.0])
def test_log_quadratic_is_exact_for_gaussians_also_at_borders(sigma):
    inner = _random_coords(1)
    # Landmarks between the first/last two pixel centres, where the fit must use an inward triple.
    g = torch.Generator().manual_seed(2)
    border = torch.stack(
        [
            torch.rand(4, 6, generator=g, dtype=torch.float64) * 1.5,
            torch.rand(4, 6, generator=g, dtype=torch.float64),
        ],
        dim=-1,
    )
    border[:, 3:] = torch.tensor([SIZE[1] - 1.0, SIZE[0] - 1.0]) - border[:, 3:]
    for coords in (inner, border):
        decoded = decode_heatmaps(gaussian_heatmaps(coords, SIZE, sigma, dtype=torch.float64))
        torch.testing.assert_close(decoded, coords, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sigma", [2.0, 10.0])
def test_round_trip_of_the_alpha_variant(sigma):
    coords = _random_coords(3, margin=3 * sigma if sigma > 5 else 0.0)
    heatmaps = gaussian_heatmaps(coords, SIZE, sigma, alpha=10.0)
    decoded, scores = decode_heatmaps(heatmaps, return_scores=True)
    assert torch.linalg.vector_norm(decoded.double() - coords, dim=-1).max() < 0.5
    # The argmax pixel is within (0.5, 0.5) px of the landmark: peak in [10 ** exp(-0.5 / (2 sigma^2)), 10].
    assert (scores <= 10.0).all() and (scores >= 10 ** math.exp(-0.5 / (2 * sigma**2)) - 1e-5).all()


def test_decode_returns_peak_scores_and_handles_ties_and_int_maps():
    heatmaps = torch.zeros(1, 2, 5, 6)
    heatmaps[0, 0, 3, 4] = 2.0
    heatmaps[0, 1, 1, 1] = heatmaps[0, 1, 2, 2] = 1.0  # tie: first in row-major order
    coords, scores = decode_heatmaps(heatmaps, return_scores=True)
    torch.testing.assert_close(coords, torch.tensor([[[4.0, 3.0], [1.0, 1.0]]]))
    torch.testing.assert_close(scores, torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(decode_heatmaps(heatmaps.long()), coords)
    with pytest.raises(MedzooDataError, match="refine"):
        decode_heatmaps(heatmaps, refine="dark")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_round_trip_on_cuda():
    coords = _random_coords(4, dtype=torch.float32).cuda()
    decoded = decode_heatmaps(gaussian_heatmaps(coords, SIZE, 2.0))
    assert decoded.device.type == "cuda"
    assert torch.linalg.vector_norm(decoded - coords, dim=-1).max() < 0.05
