"""MAE masking and loss: known answers."""

import pytest
import torch

from medzoo.masking import masked_patch_loss, random_masking


def test_random_masking_keeps_the_smallest_noise_in_ascending_order():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1]])
    keep, mask = random_masking(2, 4, 0.5, noise=noise)
    assert keep.tolist() == [[1, 3], [0, 3]]
    assert mask.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]]


def test_random_masking_draws_per_sample_and_from_the_generator():
    keep, mask = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]
    again, _ = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert torch.equal(keep, again)
    assert not torch.equal(keep[0], keep[1])
    assert random_masking(1, 4, 0.99)[0].shape == (1, 1)  # at least one visible patch
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(1, 4, 1.0)
    with pytest.raises(ValueError, match="noise has shape"):
        random_masking(2, 4, 0.5, noise=torch.rand(2, 5))


def test_masked_patch_loss_scores_masked_patches_only():
    target = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]]])
    prediction = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [2.0, 4.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # patch 1 is visible: its error (25) must not count
    # patch 0: (1 + 9) / 2 = 5; patch 2: (0 + 4) / 2 = 2; mean over the two masked patches = 3.5
    assert masked_patch_loss(prediction, target, mask, normalize_target=False).item() == pytest.approx(3.5)
    # normalised: patch 0 -> (-1/sqrt 2, 1/sqrt 2) (unbiased var 2), patch 2 (constant) -> (0, 0)
    expected = ((1 / 2**0.5) ** 2 * 2 / 2 + (4 + 16) / 2) / 2
    assert masked_patch_loss(prediction, target, mask).item() == pytest.approx(expected, rel=1e-5)
