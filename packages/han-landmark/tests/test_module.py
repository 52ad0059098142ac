"""Loss wiring, decoding/averaging, the inverse mapping and overfitting one image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from han_landmark.data import LandmarkDataset, LandmarkSample
from han_landmark.module import (
    HANLandmarkModule,
    decode_average,
    heatmap_to_input,
    input_to_heatmap,
    to_original,
)
from han_landmark.transforms import apply_matrix, resize_matrix
from medzoo.heatmaps import gaussian_heatmaps


def _gaussian(coords_xy: np.ndarray, size_hw, sigma: float) -> np.ndarray:
    """Reference target, written out with numpy: exp(-d^2 / (2 sigma^2)) per landmark."""
    ys, xs = np.mgrid[0 : size_hw[0], 0 : size_hw[1]]
    return np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in coords_xy])


def test_paper_loss_defaults():
    signature = HANLandmarkModule.__init__.__defaults__
    assert (1000.0, 3000.0, 3000.0) in signature and (2.0, 2.0, 4.0) in signature


def test_loss_weights_and_sigmas_reach_the_three_heads():
    module = HANLandmarkModule(
        num_landmarks=2, variant="tiny", loss_weights=(1.0, 10.0, 100.0), sigmas=(1.0, 2.0, 3.0)
    ).eval()
    input_hw = (32, 48)
    landmarks = torch.tensor([[[10.0, 12.0], [30.5, 20.0]]])
    visible = torch.tensor([[1.0, 0.0]])  # the second landmark is not annotated: no loss from it
    with torch.no_grad():
        heatmaps = module(torch.zeros(1, 3, *input_hw))
    assert [tuple(h.shape[-2:]) for h in heatmaps] == [(8, 12), (16, 24), (32, 48)]  # 1/4, 1/2, full
    zeros = [torch.zeros_like(h) for h in heatmaps]
    terms = module.loss_terms(zeros, landmarks, visible, input_hw)
    for term, weight, sigma, stride, heatmap in zip(
        terms, (1, 10, 100), (1, 2, 3), (4, 2, 1), heatmaps, strict=True
    ):
        centre = (landmarks[0, :1].numpy() + 0.5) / stride - 0.5
        target = _gaussian(centre, heatmap.shape[-2:], sigma)
        expected = weight * np.sum(target**2) / (2 * heatmap.shape[-2] * heatmap.shape[-1])  # mean over K=2
        assert term.item() == pytest.approx(expected, rel=1e-5)


def test_coordinate_averaging_on_planted_heatmaps():
    input_hw = (64, 80)
    planted_input = [np.array([[10.0, 20.0]]), np.array([[14.0, 22.0]]), np.array([[12.0, 27.0]])]
    heatmaps = []
    for coords, size in zip(planted_input, [(16, 20), (32, 40), (64, 80)], strict=True):
        in_heatmap = input_to_heatmap(torch.tensor(coords), input_hw, size)
        heatmaps.append(gaussian_heatmaps(in_heatmap[None], size, 1.5))
    averaged = decode_average(heatmaps, input_hw)
    np.testing.assert_allclose(averaged[0].numpy(), np.mean(planted_input, axis=0), atol=1e-3)


def test_resize_predict_inverse_returns_original_coordinates_with_perfect_heatmaps():
    rng = np.random.default_rng(0)
    original_hw, input_hw = (603, 517), (128, 96)
    original = rng.uniform([0, 0], [516, 602], (5, 2))
    to_input = resize_matrix(original_hw, input_hw)
    coords_input = torch.tensor(apply_matrix(to_input, original))[None]
    heatmaps = []
    for size, sigma in zip([(32, 24), (64, 48), (128, 96)], (2.0, 2.0, 4.0), strict=True):
        heatmaps.append(gaussian_heatmaps(input_to_heatmap(coords_input, input_hw, size), size, sigma))
    recovered = to_original(decode_average(heatmaps, input_hw), torch.tensor(to_input)[None])
    error = np.linalg.norm(recovered[0].numpy() - original, axis=1)
    assert error.max() < 0.5
    # with the reference's quarter-pixel shift the same pipeline is coarser, but still maps back
    quarter = to_original(decode_average(heatmaps, input_hw, "quarter_offset"), torch.tensor(to_input)[None])
    assert np.linalg.norm(quarter[0].numpy() - original, axis=1).max() < 0.25 * 4 * 603 / 128 * 1.5


def test_heatmap_mapping_round_trip():
    coords = torch.tensor([[3.25, 7.5]])
    back = heatmap_to_input(input_to_heatmap(coords, (64, 80), (16, 20)), (64, 80), (16, 20))
    torch.testing.assert_close(back, coords)


def test_overfitting_one_phantom_image_drives_mre_below_2px(tmp_path):
    pytest.importorskip("medzoo.synthetic.landmarks")
    from medzoo.synthetic.landmarks import render_landmark_phantom

    torch.manual_seed(0)
    image, coords = render_landmark_phantom(np.random.default_rng(0), 4, (96, 96))
    Image.fromarray(image).save(tmp_path / "phantom.png")
    dataset = LandmarkDataset([LandmarkSample(tmp_path / "phantom.png", coords, np.ones(4, bool))], (64, 64))
    batch = torch.utils.data.default_collate([dataset[0]])
    module = HANLandmarkModule(num_landmarks=4, variant="tiny")
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)

    def mre() -> float:
        module.eval()
        with torch.no_grad():
            pred = module.predict_landmarks(batch)["original"]
        module.train()
        return float((pred - batch["original_landmarks"]).norm(dim=-1).mean())

    start = mre()
    for _ in range(40):
        heatmaps = module(batch["image"])
        loss = torch.stack(module.loss_terms(heatmaps, batch["landmarks"], batch["visible"], (64, 64))).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert start > 5.0
    assert mre() < 2.0  # original (96 px) image pixels
