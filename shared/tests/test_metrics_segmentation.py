"""Segmentation metrics: MONAI-backed Dice/IoU against scikit-learn, HD95 against a brute-force reference."""

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist
from sklearn.metrics import f1_score, jaccard_score

from medzoo.errors import MedzooDataError
from medzoo.metrics import dice, hd95, iou

TOL = 1e-6


def _blobby_labels(rng, shape, num_classes):
    """Random label maps made of a few boxes, so masks have real boundaries."""
    labels = np.zeros(shape, dtype=np.int64)
    for _ in range(6):
        lo = [rng.integers(0, s - 2) for s in shape]
        hi = [rng.integers(a + 1, s + 1) for a, s in zip(lo, shape, strict=True)]
        labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = rng.integers(1, num_classes)
    return labels


def _pair(seed, shape, num_classes=4, n=3):
    rng = np.random.default_rng(seed)
    target = np.stack([_blobby_labels(rng, shape, num_classes) for _ in range(n)])
    pred = target.copy()
    flip = rng.random(target.shape) < 0.1
    pred[flip] = rng.integers(0, num_classes, flip.sum())
    pred[0] = np.roll(pred[0], 2, axis=0)
    return pred, target


@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 8)])
def test_dice_and_iou_match_sklearn(shape):
    pred, target = _pair(0, shape)
    d = dice(pred, target, num_classes=4)
    j = iou(torch.from_numpy(pred), torch.from_numpy(target), num_classes=4)
    assert d.shape == j.shape == (3, 3)
    for b in range(3):
        for c in range(1, 4):
            t, p = (target[b] == c).ravel(), (pred[b] == c).ravel()
            assert d[b, c - 1] == pytest.approx(f1_score(t, p), abs=TOL)
            assert j[b, c - 1] == pytest.approx(jaccard_score(t, p), abs=TOL)
    with_background = dice(pred, target, num_classes=4, include_background=True)
    assert with_background[0, 0] == pytest.approx(
        f1_score(target[0].ravel() == 0, pred[0].ravel() == 0), abs=TOL
    )
    np.testing.assert_allclose(dice(pred, target, reduction="mean_batch"), d.mean(0), atol=TOL)
    assert dice(pred, target, reduction="mean") == pytest.approx(d.mean(), abs=TOL)


def _edges(mask):
    """Boundary voxels: the mask minus its cross-shaped erosion, with outside-image as background."""
    padded = np.pad(mask, 1)
    edges = padded & ~binary_erosion(padded)
    return np.argwhere(edges[tuple(slice(1, -1) for _ in mask.shape)])


def _reference_hd95(pred_mask, target_mask, spacing):
    a = _edges(pred_mask) * np.asarray(spacing)
    b = _edges(target_mask) * np.asarray(spacing)
    distances = cdist(a, b)
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


@pytest.mark.parametrize(("shape", "spacing"), [((32, 28), (0.7, 1.3)), ((14, 12, 10), (1.5, 1.0, 3.0))])
def test_hd95_matches_brute_force_reference(shape, spacing):
    pred, target = _pair(1, shape)
    values = hd95(pred, target, spacing=spacing, num_classes=4)
    checked = 0
    for b in range(3):
        for c in range(1, 4):
            p, t = pred[b] == c, target[b] == c
            if p.any() and t.any():
                assert values[b, c - 1] == pytest.approx(_reference_hd95(p, t, spacing), abs=1e-5)
                checked += 1
    assert checked >= 6


def test_hd95_spacing_per_image_scales_distances():
    target = np.zeros((2, 20, 20), dtype=np.int64)
    target[:, 5:10, 5:10] = 1
    pred = np.roll(target, 4, axis=1)  # shifted 4 px along the first axis
    in_pixels = hd95(pred, target)
    scaled = hd95(pred, target, spacing=[[2.0, 1.0], [0.5, 1.0]])
    np.testing.assert_allclose(scaled[:, 0], in_pixels[:, 0] * [2.0, 0.5], rtol=1e-6)


def test_empty_mask_conventions():
    target = np.zeros((3, 8, 8), dtype=np.int64)
    pred = np.zeros_like(target)
    target[2, 2:4, 2:4] = 1  # image 0: both empty; image 1: only pred; image 2: only target
    pred[1, 2:4, 2:4] = 1
    np.testing.assert_array_equal(dice(pred, target, num_classes=2)[:, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(iou(pred, target, num_classes=2)[:, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(hd95(pred, target, num_classes=2)[:, 0], [0.0, np.inf, np.inf])
    ignored = dice(pred, target, num_classes=2, ignore_empty=True)[:, 0]
    assert np.isnan(ignored[:2]).all() and ignored[2] == 0.0
    assert np.isnan(iou(pred, target, num_classes=2, ignore_empty=True)[:2, 0]).all()
    np.testing.assert_array_equal(
        hd95(pred, target, num_classes=2, ignore_empty=True)[:, 0], [np.nan, np.nan, np.inf]
    )
    assert dice(pred, target, num_classes=2, ignore_empty=True, reduction="mean") == 0.0


def test_segmentation_rejects_bad_labels():
    with pytest.raises(MedzooDataError, match=r"labels in \[0, 2\)"):
        dice(np.full((1, 4, 4), 2), np.zeros((1, 4, 4), dtype=int), num_classes=2)
    with pytest.raises(MedzooDataError, match="equal shapes"):
        iou(np.zeros((1, 4, 4), dtype=int), np.zeros((1, 4, 5), dtype=int))
    with pytest.raises(MedzooDataError, match="integer label maps"):
        hd95(np.full((1, 4, 4), 0.5), np.zeros((1, 4, 4)))
