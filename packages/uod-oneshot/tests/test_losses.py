"""Known answers: the InfoNCE on planted features, template matching, alpha^Gaussian targets, decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medzoo.heatmaps import gaussian_heatmaps
from uod_oneshot.decoding import decode_largest_component
from uod_oneshot.losses import heatmap_loss, multiscale_infonce_loss, window_infonce_loss
from uod_oneshot.matching import match_landmarks, most_representative, template_features


def _planted(size: int, cell: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A map whose feature at ``cell`` is e0 and zero-similarity (e1) elsewhere, and the query e0."""
    feats = torch.zeros(1, 2, size, size)
    feats[0, 1] = 1.0
    feats[0, :, cell[1], cell[0]] = torch.tensor([1.0, 0.0])
    return feats, torch.tensor([[1.0, 0.0]])


def test_infonce_on_planted_features_matches_the_hand_computed_value():
    # map 16x16 at stride 2 of a 32 px image; gt cell (8, 8): window [2, 14) -> 144 cells, cos 1 at gt, 0 else
    feats, _ = _planted(16, (8, 8))
    crop = torch.zeros(1, 2, 16, 16)
    crop[0, 0] = 1.0  # every crop position has the query feature e0
    full_pts = torch.tensor([[[16.0, 16.0]]])
    crop_pts = torch.tensor([[[5.0, 5.0]]])
    eps = 1e-3
    cos_gt = 1.0 / (1.0 + eps)
    expected = -math.log(math.exp(cos_gt) / (math.exp(cos_gt) + 143))
    total, terms = multiscale_infonce_loss([feats], [crop], full_pts, crop_pts, strides=(2,), window=6)
    # a single stride is also the coarsest: the whole map (256 cells)
    whole = -math.log(math.exp(cos_gt) / (math.exp(cos_gt) + 255))
    assert float(total) == pytest.approx(whole, rel=1e-5)
    _, terms = multiscale_infonce_loss(
        [feats[..., ::4, ::4], feats], [crop[..., ::4, ::4], crop], full_pts * 1, crop_pts, strides=(8, 2)
    )
    assert float(terms[1]) == pytest.approx(expected, rel=1e-5)


def test_window_is_cut_at_the_border_and_asymmetric():
    sim = torch.zeros(1, 1, 10, 10)
    sim[0, 0, 0, 0] = 1.0
    # gt (0, 0): rows/cols [-6, 6) cut to [0, 6) -> 36 cells
    loss = window_infonce_loss(sim, torch.tensor([[[0, 0]]]), window=6)
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 35)), rel=1e-6)
    # negative similarities are clamped to 0
    sim2 = -torch.ones(1, 1, 10, 10)
    sim2[0, 0, 0, 0] = 1.0
    assert float(window_infonce_loss(sim2, torch.tensor([[[0, 0]]]), window=6)) == pytest.approx(float(loss))


def test_pseudo_labelling_recovers_a_planted_landmark_in_a_shifted_copy():
    torch.manual_seed(0)
    strides = (32, 16, 8, 4, 2)
    size = 128
    template = [torch.randn(1, 16, size // s, size // s) for s in strides]
    shift = (32, 64)  # (x, y) px, a multiple of every stride
    target = [
        torch.roll(f, shifts=(shift[1] // s, shift[0] // s), dims=(2, 3))
        for f, s in zip(template, strides, strict=True)
    ]
    points = torch.tensor([[20.0, 10.0], [40.5, 30.0], [9.0, 50.0]])
    queries = template_features(template, points, strides)
    coords, scores = match_landmarks(target, queries, strides)
    expected = points + torch.tensor(shift, dtype=torch.float32)
    # the winning stride-2 cell holds the landmark: its centre is within 0.5 px per axis
    assert (coords[0] - expected).abs().max() <= 0.5 + 1e-6
    assert bool((scores > 0).all())


def test_degenerate_constant_features_give_the_first_cell():
    feats = [torch.ones(1, 4, 64 // s, 64 // s) for s in (32, 16, 8, 4, 2)]
    queries = template_features(feats, torch.tensor([[30.0, 30.0]]), (32, 16, 8, 4, 2))
    coords, _ = match_landmarks(feats, queries, (32, 16, 8, 4, 2))
    assert coords[0, 0].tolist() == [0.5, 0.5]


def test_alpha_gaussian_targets():
    maps = gaussian_heatmaps(torch.tensor([[[30.0, 20.0]]]), (64, 64), 10.0, alpha=10.0, alpha_floor=1.05)
    assert float(maps[0, 0, 20, 30]) == pytest.approx(10.0)
    g = math.exp(-(15.0**2) / 200.0)
    assert float(maps[0, 0, 20, 45]) == pytest.approx(10.0**g, rel=1e-5)
    # cut-off: alpha^g <= 1.05 is 0, i.e. beyond ~2.78 sigma
    assert float(maps[0, 0, 20, 30 + 28]) == 0.0 and float(maps[0, 0, 20, 30 + 27]) > 1.05
    pred = torch.zeros_like(maps)
    expected = torch.where(maps > 1.5, maps - 0.75, 0.5 * maps**2 / 1.5).mean()
    assert float(heatmap_loss(pred, maps, beta=1.5)) == pytest.approx(float(expected), rel=1e-6)


def test_decoding_known_answer_largest_component_and_mean_of_top_pixels():
    heat = torch.zeros(1, 1, 20, 20)
    heat[0, 0, 2, 2] = 1.0  # an isolated global maximum (component of 1 pixel)
    heat[0, 0, 10:13, 5:9] = 0.8  # the largest component above 0.25 (12 pixels)
    heat[0, 0, 11, 8] = 0.9
    # peak 1.0: > 0.88 only the isolated pixel -> the largest component has none above 0.88: its own max
    assert decode_largest_component(heat)[0, 0].tolist() == [8.0, 11.0]
    heat[0, 0, 2, 2] = 0.0
    heat[0, 0, 11, 8] = 0.8  # flat top: every pixel of the block is above 0.88 * max -> its centroid
    assert decode_largest_component(heat)[0, 0].tolist() == pytest.approx([6.5, 11.0])
    # diagonal neighbours are connected (8-connectivity): a diagonal line of 5 beats a 2x2 square
    diag = torch.zeros(1, 1, 10, 10)
    for i in range(5):
        diag[0, 0, i, i] = 1.0
    diag[0, 0, 7:9, 7:9] = 1.0
    assert decode_largest_component(diag)[0, 0].tolist() == [2.0, 2.0]
    # ties go to the first component in raster order
    tie = torch.zeros(1, 1, 10, 10)
    tie[0, 0, 1, 6:8] = 1.0
    tie[0, 0, 5, 1:3] = 1.0
    assert decode_largest_component(tie)[0, 0].tolist() == [6.5, 1.0]
    assert decode_largest_component(torch.zeros(1, 2, 5, 5)).tolist() == [[[0.0, 0.0], [0.0, 0.0]]]


def test_most_representative_is_the_medoid():
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(32)
    others = [centre + 0.8 * rng.standard_normal(32) for _ in range(6)]
    descriptors = torch.tensor(np.stack([*others[:3], centre, *others[3:]]))
    index, mean = most_representative(descriptors)
    assert index == 3
    unit = descriptors / descriptors.norm(dim=1, keepdim=True)
    brute = [float((1 - unit[i] @ unit.T).sum() / 6) for i in range(7)]
    assert mean.tolist() == pytest.approx(brute)
