"""APPLE's losses (FAAP-style, Wang et al. CVPR 2022, on the latent): pure functions on logits.

- Discriminator ``D_p``: ``L_D = CE(D_p(z'), a)``.
- Perturber ``G_p``: ``L_G = -beta * CE(D_p(z'), a) - gamma * H(softmax(D_p(z'))) + w_seg * L_seg``, with
  ``L_seg = Dice + CE`` of the frozen decoder's logits on ``z'`` against the ground-truth mask. Maximising
  the discriminator's CE removes the attribute; maximising its entropy keeps the perturber from merely
  flipping the prediction (which would still leak the attribute); ``L_seg`` keeps the utility.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["discriminator_loss", "mean_entropy", "perturber_loss", "segmentation_loss"]


def mean_entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of ``softmax(logits)`` over the batch; logits (B, K) -> scalar."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def segmentation_loss(
    logits: Tensor, target: Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5
) -> Tensor:
    """Soft Dice + cross-entropy on (B, C, H, W) logits and a (B, H, W) integer mask.

    Dice is MONAI's ``DiceLoss(softmax=True, to_onehot_y=True, include_background=True)`` with the
    batch-mean reduction: ``1 - (2 sum(p * y) + s) / (sum(p) + sum(y) + s)`` per image and class, averaged
    (``smooth`` = s in numerator and denominator).
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"segmentation_loss: logits {tuple(logits.shape)}, target {tuple(target.shape)}")
    target = target.long()
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    dice = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    return dice_weight * dice.mean() + ce_weight * F.cross_entropy(logits, target)


def discriminator_loss(logits: Tensor, groups: Tensor) -> Tensor:
    """``L_D = CE(D_p(z'), a)``: logits (B, K), groups (B,) integers in [0, K)."""
    return F.cross_entropy(logits, groups.long())


def perturber_loss(
    disc_logits: Tensor,
    groups: Tensor,
    seg_logits: Tensor,
    target: Tensor,
    beta: float = 0.4,
    gamma: float = 0.1,
    seg_weight: float = 0.7,
) -> dict[str, Tensor]:
    """``L_G = -beta * CE(D_p(z'), a) - gamma * H(D_p(z')) + seg_weight * (Dice + CE)``.

    Args:
        disc_logits: (B, K) discriminator logits on the perturbed latent.
        groups: (B,) sensitive attribute.
        seg_logits: (B, C, H, W) decoder logits on the perturbed latent.
        target: (B, H, W) ground-truth mask.
        beta, gamma, seg_weight: the weights (defaults: FAAP's 0.4 / 0.1 / 0.7).

    Returns:
        ``{"loss", "adversarial_ce", "entropy", "segmentation"}`` (the parts unweighted).
    """
    ce = F.cross_entropy(disc_logits, groups.long())
    entropy = mean_entropy(disc_logits)
    seg = segmentation_loss(seg_logits, target)
    loss = -beta * ce - gamma * entropy + seg_weight * seg
    return {"loss": loss, "adversarial_ce": ce, "entropy": entropy, "segmentation": seg}


def balanced_accuracy(pred: Tensor, groups: Tensor, num_groups: int) -> float:
    """Mean over the groups present of the per-group recall; chance is ``1 / groups present``."""
    recalls = [
        (pred[groups == g] == g).float().mean().item() for g in range(num_groups) if bool((groups == g).any())
    ]
    return float(torch.tensor(recalls).mean()) if recalls else float("nan")
