"""The augmentation family: known geometric and intensity answers, theta as YAML, scaling."""

import numpy as np
import pytest
import torch

from fewshot_augsearch.augment import (
    AugmentationParams,
    SampledTransform,
    _affine_matrix,
    augment,
    load_params,
    save_params,
    scale_params,
)
from medzoo.errors import MedzooDataError

IDENTITY = AugmentationParams(0, 0, 0, (1, 1), 0, 5, (1, 1), 0, 0)


def _image():
    return torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))


def test_identity_theta_changes_nothing():
    image, mask = _image(), (torch.rand(16, 16) > 0.5).long()
    out, out_mask = augment(image, mask, IDENTITY, np.random.default_rng(0))
    torch.testing.assert_close(out, image, atol=1e-4, rtol=0)
    assert torch.equal(out_mask, mask)


def _fixed(rotate=0.0, shift=(0.0, 0.0), gamma=1.0, brightness=0.0, contrast=1.0):
    return SampledTransform(
        _affine_matrix(rotate, 0.0, 1.0, shift, (16, 16)), None, gamma, brightness, contrast
    )


def test_shift_moves_content_by_whole_pixels():
    image, mask = _image(), torch.zeros(16, 16, dtype=torch.long)
    mask[4:8, 4:8] = 1
    out, out_mask = augment(image, mask, IDENTITY, None, _fixed(shift=(2.0, 0.0)))
    torch.testing.assert_close(out[0, :, 2:], image[0, :, :-2], atol=1e-4, rtol=0)  # x (columns) + 2
    assert out_mask[4:8, 6:10].all() and out_mask.sum() == 16


def test_rotation_by_90_degrees_is_a_rot90():
    image = _image()
    out, _ = augment(image, None, IDENTITY, None, _fixed(rotate=90.0))
    candidates = [torch.rot90(image, k, dims=(1, 2)) for k in (1, 3)]
    assert min(float((out - c).abs().max()) for c in candidates) < 1e-4


def test_gamma_brightness_contrast_known_answers():
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)[None]
    out, _ = augment(ramp, None, IDENTITY, None, _fixed(gamma=2.0))
    span = 1 + 1e-5
    torch.testing.assert_close(out, span * ((ramp + 1e-5) / span) ** 2, atol=1e-5, rtol=0)
    out, _ = augment(ramp, None, IDENTITY, None, _fixed(brightness=0.1, contrast=0.5))
    mean = ramp.mean()
    torch.testing.assert_close(out, (ramp - mean) * 0.5 + mean + 0.1 * span, atol=1e-4, rtol=0)


def test_draws_are_reproducible_and_within_range():
    params = AugmentationParams()
    a = augment(_image(), None, params, np.random.default_rng(3))[0]
    b = augment(_image(), None, params, np.random.default_rng(3))[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, augment(_image(), None, params, np.random.default_rng(4))[0])


def test_scale_params_known_values():
    wide = scale_params(AugmentationParams(), 2.0)
    assert (wide.rotate, wide.shift, wide.shear, wide.elastic_alpha) == (10, 10, 10, 20)
    assert wide.scale == pytest.approx((0.8, 1.4)) and wide.gamma == pytest.approx((0.05, 2.0))
    off = scale_params(AugmentationParams(), {"affine": 0.0})
    assert off.rotate == 0 and off.scale == (1.0, 1.0) and off.gamma == (0.5, 1.5)
    with pytest.raises(MedzooDataError, match="groups"):
        scale_params(AugmentationParams(), {"flip": 1.0})


def test_theta_yaml_round_trip_and_bad_files(tmp_path):
    params = AugmentationParams(rotate=7.5, scale=(0.8, 1.3), brightness=0.2)
    path = save_params(tmp_path / "theta.yaml", params, {"strategy": "grid"})
    assert load_params(path) == params
    assert "{" not in path.read_text()  # block style
    (tmp_path / "bad.yaml").write_text("augmentation:\n  rotate: 5\n  flip: 1\n")
    with pytest.raises(MedzooDataError, match="unknown keys"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "neg.yaml").write_text("augmentation:\n  rotate: -5\n")
    with pytest.raises(MedzooDataError, match="rotate"):
        load_params(tmp_path / "neg.yaml")
    with pytest.raises(MedzooDataError, match="no such file"):
        load_params(tmp_path / "missing.yaml")
