"""APPLE's losses on hand-computed cases and against MONAI."""

from __future__ import annotations

import math

import torch

from apple_fairness.losses import discriminator_loss, mean_entropy, perturber_loss, segmentation_loss


def test_entropy_known_answers():
    assert math.isclose(float(mean_entropy(torch.zeros(4, 3))), math.log(3), rel_tol=1e-6)
    assert float(mean_entropy(torch.tensor([[100.0, 0.0]]))) < 1e-20
    # p = (1/4, 3/4)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert math.isclose(float(mean_entropy(torch.tensor([[0.0, math.log(3)]]))), expected, rel_tol=1e-6)


def test_discriminator_loss_is_cross_entropy():
    logits = torch.tensor([[0.0, math.log(3)]])
    assert math.isclose(float(discriminator_loss(logits, torch.tensor([0]))), math.log(4), rel_tol=1e-6)
    assert math.isclose(float(discriminator_loss(logits, torch.tensor([1]))), math.log(4 / 3), rel_tol=1e-6)


def test_segmentation_loss_matches_monai_dicece():
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 8, 8)
    target = torch.randint(0, 4, (3, 8, 8))
    reference = DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)
    expected = reference(logits, target[:, None])
    assert torch.allclose(segmentation_loss(logits, target), expected, atol=1e-6)


def test_segmentation_loss_hand_computed():
    # one 1x2 image, 2 classes, logits giving p(fg) = (0.5, 0.5); target (0, 1)
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # Dice per class: 2 * 0.5 / (1 + 1) = 0.5 -> loss 0.5; CE = ln 2
    assert math.isclose(float(segmentation_loss(logits, target, smooth=0.0)), 0.5 + math.log(2), rel_tol=1e-6)


def test_perturber_loss_combines_the_faap_terms():
    disc = torch.tensor([[0.0, math.log(3)]])
    groups = torch.tensor([0])
    seg_logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    parts = perturber_loss(disc, groups, seg_logits, target, beta=0.4, gamma=0.1, seg_weight=0.7)
    ce = math.log(4)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    seg = float(segmentation_loss(seg_logits, target))
    assert math.isclose(float(parts["loss"]), -0.4 * ce - 0.1 * entropy + 0.7 * seg, rel_tol=1e-6)
    assert math.isclose(float(parts["adversarial_ce"]), ce, rel_tol=1e-6)
    # gradient w.r.t. the discriminator logits: -beta (p - y) + gamma p_i (log p_i + H)
    disc = disc.clone().requires_grad_(True)
    perturber_loss(disc, groups, seg_logits, target)["loss"].backward()
    p = torch.tensor([0.25, 0.75])
    y = torch.tensor([1.0, 0.0])
    expected = -0.4 * (p - y) + 0.1 * p * (p.log() + entropy)
    assert torch.allclose(disc.grad[0], expected, atol=1e-6)
