"""Loss wiring, decoding/averaging, the inverse mapping and overfitting one image."""

from __future__ import annotations

import math
from importlib.resources import files
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
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
from medzoo.lightning import WarmupCosineLR


def _gaussian(coords_xy: np.ndarray, size_hw, sigma: float) -> np.ndarray:
    """Reference target, written out with numpy: exp(-d^2 / (2 sigma^2)) per landmark."""
    ys, xs = np.mgrid[0 : size_hw[0], 0 : size_hw[1]]
    return np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in coords_xy])


@pytest.mark.parametrize(
    ("kwargs", "weights", "sigmas"),
    [
        ({}, (1000, 3000, 3000), (2, 2, 4)),  # the paper's defaults: heads A (1/4), B (1/2), C (full)
        ({"loss_weights": (1.0, 10.0, 100.0), "sigmas": (1.0, 2.0, 3.0)}, (1, 10, 100), (1, 2, 3)),
    ],
)
def test_loss_weights_and_sigmas_reach_the_three_heads(kwargs, weights, sigmas):
    module = HANLandmarkModule(num_landmarks=2, variant="tiny", **kwargs).eval()
    input_hw = (32, 48)
    landmarks = torch.tensor([[[10.0, 12.0], [30.5, 20.0]]])
    visible = torch.tensor([[1.0, 0.0]])  # the second landmark is not annotated: no loss from it
    with torch.no_grad():
        heatmaps = module(torch.zeros(1, 3, *input_hw))
    assert [tuple(h.shape[-2:]) for h in heatmaps] == [(8, 12), (16, 24), (32, 48)]  # 1/4, 1/2, full
    zeros = [torch.zeros_like(h) for h in heatmaps]
    terms = module.loss_terms(zeros, landmarks, visible, input_hw)
    for term, weight, sigma, stride, heatmap in zip(terms, weights, sigmas, (4, 2, 1), heatmaps, strict=True):
        centre = (landmarks[0, :1].numpy() + 0.5) / stride - 0.5
        target = _gaussian(centre, heatmap.shape[-2:], sigma)
        expected = weight * np.sum(target**2) / (2 * heatmap.shape[-2] * heatmap.shape[-1])  # mean over K=2
        assert term.item() == pytest.approx(expected, rel=1e-5)


def _mmcv_lr(base, epoch, iteration, max_epochs, warmup_iters, ratio):
    """mmcv: CosineAnnealing by epoch to min_lr 0, times the linear warm-up by iteration."""
    regular = 0.5 * base * (1 + math.cos(math.pi * epoch / max_epochs))
    if iteration >= warmup_iters:
        return regular
    return regular * (1 - (1 - iteration / warmup_iters) * (1 - ratio))


def test_paper_config_schedule_equals_mmcv_at_the_named_epochs():
    config = yaml.safe_load((files("han_landmark") / "configs" / "paper.yaml").read_text())
    schedule = config["model"]["scheduler"]
    assert schedule["class_path"] == "medzoo.lightning.WarmupCosineLR"
    assert config["model"]["scheduler_interval"] == "step"
    base = config["model"]["optimizer"]["init_args"]["lr"]
    epochs, per_epoch = config["trainer"]["max_epochs"], 3
    module = HANLandmarkModule(
        num_landmarks=2,
        variant="tiny",
        optimizer=lambda params: torch.optim.AdamW(params, lr=base),
        scheduler=lambda opt: WarmupCosineLR(opt, **schedule["init_args"]),
        scheduler_interval=config["model"]["scheduler_interval"],
    )
    module._trainer = SimpleNamespace(  # what follow_trainer reads from a Trainer with max_epochs=200
        estimated_stepping_batches=epochs * per_epoch,
        max_epochs=epochs,
        max_steps=-1,
        num_training_batches=per_epoch,
        accumulate_grad_batches=1,
        callbacks=[],
    )
    optim_config = module.configure_optimizers()
    optimizer, scheduler = optim_config["optimizer"], optim_config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(epochs * per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for epoch in (0, 49, 50, 100, 199):
        for i in range(per_epoch):
            step = epoch * per_epoch + i
            expected = _mmcv_lr(base, epoch, step, epochs, 50 * per_epoch, 1e-5)
            assert lrs[step] == pytest.approx(expected, rel=1e-9, abs=1e-15), (epoch, i)
    # the warm-up multiplies the cosine: at epoch 49 the rate is below the 0.2-era "warm up to 1" value
    assert lrs[49 * per_epoch] < base


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


def _gathered(module, pred, target, spacing, size):
    module.outputs["test"].update(
        index=torch.arange(len(pred)),
        pred=torch.as_tensor(pred),
        target=torch.as_tensor(target),
        spacing=torch.as_tensor(spacing),
        size=torch.as_tensor(size),
    )


def test_test_metrics_px_median_std_scaled_sdr_and_per_landmark_csv(tmp_path):
    rng = np.random.default_rng(1)
    n, k = 5, 12
    target = rng.uniform(0, 500, (n, k, 2))
    pred = target + rng.normal(0, 8, (n, k, 2))
    target[2, 3] = np.nan  # one landmark not annotated
    size = np.tile([[1200, 968]], (n, 1))  # half the ISBI size: 20 px there = 10 px here
    module = HANLandmarkModule(num_landmarks=k, variant="tiny")
    module._trainer = SimpleNamespace(default_root_dir=str(tmp_path), is_global_zero=True)
    module.log = lambda *args, **kwargs: None
    _gathered(module, pred, target, np.full((n, 2), np.nan), size)
    module.on_test_epoch_end()
    errors = np.hypot(*(pred - target).transpose(2, 0, 1))
    finite = errors[np.isfinite(errors)]
    metrics = module.test_results["metrics"]
    assert metrics["mre"] == metrics["mre_px"] == pytest.approx(finite.mean())
    assert metrics["mre_px_median"] == pytest.approx(np.median(finite))
    assert metrics["mre_px_std"] == pytest.approx(finite.std())
    scale = np.hypot(2400, 1935) / np.hypot(1200, 968)
    assert metrics["sdr_20px_scaled"] == pytest.approx(np.mean(finite * scale < 20))
    assert "mre_mm" not in metrics and not any(name.endswith("mm") for name in metrics)
    names = [name for name in sorted(metrics) if "landmark" in name]
    assert names == [f"mre_px_landmark{i:02d}" for i in range(k)]  # numeric order when sorted
    table = pd.read_csv(tmp_path / "test_per_landmark.csv")
    assert table["landmark"].tolist() == [str(i) for i in range(k)] + ["all"]
    np.testing.assert_allclose(table["mre"][:k], np.nanmean(errors, axis=0))
    np.testing.assert_allclose(table["median"][:k], np.nanmedian(errors, axis=0))
    assert table["n"].tolist()[3] == n - 1 and table["mre"].iloc[-1] == pytest.approx(finite.mean())
    np.testing.assert_allclose(
        table["sdr_30px_scaled"][:k],
        [np.mean(errors[np.isfinite(errors[:, j]), j] * scale < 30) for j in range(k)],
    )


def test_test_metrics_in_mm_when_the_spacing_is_known(tmp_path):
    rng = np.random.default_rng(2)
    target = rng.uniform(0, 300, (4, 3, 2))
    pred = target + rng.normal(0, 20, (4, 3, 2))
    spacing = np.array([[0.1, 0.1], [0.1, 0.1], [0.2, 0.2], [0.1, 0.15]])
    module = HANLandmarkModule(num_landmarks=3, variant="tiny")
    module._trainer = SimpleNamespace(default_root_dir=str(tmp_path), is_global_zero=True)
    module.log = lambda *args, **kwargs: None
    _gathered(module, pred, target, spacing, np.tile([[300, 300]], (4, 1)))
    module.on_test_epoch_end()
    metrics = module.test_results["metrics"]
    mm = np.hypot(
        (pred - target)[..., 0] * spacing[:, None, 0], (pred - target)[..., 1] * spacing[:, None, 1]
    )
    px = np.hypot(*(pred - target).transpose(2, 0, 1))
    assert metrics["mre"] == metrics["mre_mm"] == pytest.approx(mm.mean())
    assert metrics["mre_mm_median"] == pytest.approx(np.median(mm)) and metrics["mre_px"] == pytest.approx(
        px.mean()
    )
    assert metrics["mre_px_median"] == pytest.approx(np.median(px))
    for radius in (2.0, 2.5, 3.0, 4.0):
        assert metrics[f"sdr_{radius:g}mm"] == pytest.approx(np.mean(mm < radius))
