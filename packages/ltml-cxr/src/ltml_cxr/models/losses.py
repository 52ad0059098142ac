"""The six multi-label losses compared in LTML-MIMIC-CXR: CE, Focal, DB, ANR, ANR-LLA and ANR-LLM.

All six are one :class:`ResampleLoss` with different switches (``LOSS_CONFIGS``), as in the reference code,
where CE, Focal and DB are the Distribution-Balanced ``ResampleLoss`` and ANR / ANR-LLA / ANR-LLM its
``LamdaResampleLoss`` / ``LamdaNoiseResampleLoss`` variants. For logits ``z`` and labels ``y`` in {0, 1}
(B, C), each entry's loss is::

    z' = z + b                      prior bias (DB), b_c = -log(N / n_c - 1) * init_bias / neg_scale
    negatives: z' = neg_scale * z', w = w / neg_scale                         (DB, "scaled")
           or  z' = lambda * z',    w = w / sg(lambda), lambda = 10 (1 - sigmoid(z)) + 1  (ANR, "adaptive")
    l = balance * (1 - p_t)^gamma * w * BCE(z', y)           focal (p_t = exp(-BCE(z', y)))
    w = sigmoid(beta (r - mu)) + alpha,  r_ic = (1 / n_c) / sum_{j: y_ij = 1} 1 / n_j   re-balancing weight

(``sg`` = stop-gradient; lambda is computed from the RAW logit and is not detached inside ``z'``.) The batch
loss is the plain mean over the B x C entries. Large-loss reconsideration (LLA / LLM) then, from epoch 1 on,
takes the ``k = ceil(0.1 * epoch * B * C)`` largest losses among the negative entries and sets them to 0
(LLA) or replaces them by the loss of the same entry with the label flipped (LLM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSS_CONFIGS", "LOSS_NAMES", "ResampleLoss", "build_loss", "num_reconsidered"]

_DB = {"focal": True, "rebalance": True, "prior_bias": True}
LOSS_CONFIGS: dict[str, dict[str, Any]] = {
    "ce": {"focal": False, "rebalance": False, "prior_bias": False, "negatives": "plain"},
    "focal": {"focal": True, "rebalance": False, "prior_bias": False, "negatives": "plain"},
    "db": {**_DB, "negatives": "scaled"},
    "anr": {**_DB, "negatives": "adaptive"},
    "anr_lla": {**_DB, "negatives": "adaptive", "large_loss": "abandon"},
    "anr_llm": {**_DB, "negatives": "adaptive", "large_loss": "modify"},
}
"""The paper's six methods; the DB values (alpha .1, beta 10, mu .2, neg_scale 2, init_bias .05) are the
defaults of :class:`ResampleLoss`."""
LOSS_NAMES = tuple(LOSS_CONFIGS)


def num_reconsidered(
    num_entries: int, epoch: int, rate: float = 0.1, reference_rounding: bool = False
) -> int:
    """k, the number of negative losses LLA / LLM reconsider: ``ceil(rate * epoch * B * C)``, at most B * C.

    Args:
        num_entries: B * C.
        epoch: the 0-based training epoch (epoch 0 reconsiders nothing).
        rate: the reference's ``delta_rel`` (0.1).
        reference_rounding: compute it as the reference does, ``ceil(B*C * (1 - (1 - rate * epoch)))`` in
            floating point, which is one more at some sizes (B*C = 20, epoch 3 gives 7 instead of 6).
    """
    if epoch <= 0:
        return 0
    if reference_rounding:
        k = math.ceil(num_entries * (1 - (1 - rate * epoch)))
    else:
        k = math.ceil(Fraction(str(rate)) * epoch * num_entries)
    return max(0, min(int(k), int(num_entries)))


class ResampleLoss(nn.Module):
    """Distribution-Balanced multi-label loss with the paper's ANR and large-loss reconsideration.

    Call ``loss(logits, targets, epoch)`` with logits (B, C) and targets (B, C) in {0, 1} (-1, "uncertain",
    counts as 0); it returns a scalar. The class frequencies of the training split are buffers set with
    :meth:`set_class_counts` (saved in checkpoints).

    Args:
        num_classes: C.
        focal: multiply by ``balance * (1 - p_t) ** gamma`` (focal loss); ``gamma`` 2, ``balance`` 2.
        rebalance: the re-balancing weight ``sigmoid(beta (r - mu)) + alpha`` (alpha .1, beta 10, mu .2).
        prior_bias: add the logit prior ``b_c = -log(N / n_c - 1) * init_bias / neg_scale`` (init_bias .05,
            neg_scale 2).
        negatives: how negative entries are regularised: ``"plain"`` (not at all), ``"scaled"`` (DB: logit
            times ``neg_scale``, weight divided by it) or ``"adaptive"`` (ANR: logit times
            ``lambda = anr_scale * (1 - sigmoid(z)) + anr_offset``, weight divided by the detached lambda).
        large_loss: ``None``, ``"abandon"`` (LLA: zero the large negative losses) or ``"modify"`` (LLM:
            replace them by the loss with the label flipped).
        large_loss_rate: k = ceil(rate * epoch * B * C) (0.1).
        reference_quirks: reproduce three behaviours of the reference implementation that we treat as bugs
            (off by default): (1) LLM's flipped pass sees the logits with the prior bias already added once
            (the reference adds it in place), so its logit is ``z + 2b`` and its lambda ``10 (1 -
            sigmoid(z + b)) + 1``; (2) the threshold is the k-th largest of ``(y == 0) * L`` over ALL entries
            and every entry at or above it is replaced, so once k exceeds the number of non-zero negative
            losses the threshold is 0 and positives are replaced too; (3) k in floating point (see
            :func:`num_reconsidered`). The reference's crash for k > B*C (epoch >= 11) is never reproduced: k
            is capped at B*C.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        focal: bool = True,
        gamma: float = 2.0,
        balance: float = 2.0,
        rebalance: bool = True,
        alpha: float = 0.1,
        beta: float = 10.0,
        mu: float = 0.2,
        prior_bias: bool = True,
        init_bias: float = 0.05,
        neg_scale: float = 2.0,
        negatives: str = "scaled",
        anr_scale: float = 10.0,
        anr_offset: float = 1.0,
        large_loss: str | None = None,
        large_loss_rate: float = 0.1,
        reference_quirks: bool = False,
    ) -> None:
        super().__init__()
        if negatives not in ("plain", "scaled", "adaptive"):
            raise ValueError(f"negatives={negatives!r}; expected 'plain', 'scaled' or 'adaptive'")
        if large_loss not in (None, "abandon", "modify"):
            raise ValueError(f"large_loss={large_loss!r}; expected None, 'abandon' or 'modify'")
        self.num_classes = int(num_classes)
        self.focal, self.gamma, self.balance = bool(focal), float(gamma), float(balance)
        self.rebalance, self.alpha, self.beta, self.mu = bool(rebalance), float(alpha), float(beta), float(mu)
        self.prior_bias, self.init_bias, self.neg_scale = bool(prior_bias), float(init_bias), float(neg_scale)
        self.negatives, self.anr_scale, self.anr_offset = negatives, float(anr_scale), float(anr_offset)
        self.large_loss, self.large_loss_rate = large_loss, float(large_loss_rate)
        self.reference_quirks = bool(reference_quirks)
        # Frequencies of the training split; uniform placeholders until set_class_counts is called.
        self.register_buffer("class_counts", torch.ones(self.num_classes))
        self.register_buffer("num_samples", torch.tensor(2.0))

    def set_class_counts(self, counts: Sequence[float] | torch.Tensor, num_samples: int) -> None:
        """Set n_c (positives per class) and N (images) of the training split.

        A class with no (or only) positives has no finite prior; its count is clipped to [1, N - 1].
        """
        counts = torch.as_tensor(counts, dtype=torch.float32).reshape(-1)
        if counts.numel() != self.num_classes or num_samples < 2:
            raise ValueError(
                f"class counts of shape {tuple(counts.shape)} for N={num_samples}; "
                f"expected ({self.num_classes},) and N >= 2"
            )
        self.class_counts.copy_(counts.clamp(1.0, float(num_samples) - 1.0))
        self.num_samples.fill_(float(num_samples))

    def logit_bias(self) -> torch.Tensor:
        """(C,) prior bias ``b_c = -log(N / n_c - 1) * init_bias / neg_scale`` (zeros without prior_bias)."""
        if not self.prior_bias:
            return torch.zeros_like(self.class_counts)
        return -torch.log(self.num_samples / self.class_counts - 1.0) * self.init_bias / self.neg_scale

    def rebalance_weights(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, C) re-balancing weights; a row without positives gets ``1 + alpha`` (the limit r -> inf)."""
        if not self.rebalance:
            return torch.ones_like(targets)
        inverse = 1.0 / self.class_counts  # (C,)
        repeat = targets @ inverse  # (B,)
        has_positive = (repeat > 0)[:, None]
        ratio = inverse[None] / torch.where(has_positive, repeat[:, None], torch.ones_like(repeat[:, None]))
        weights = torch.sigmoid(self.beta * (ratio - self.mu)) + self.alpha
        return torch.where(has_positive, weights, torch.full_like(weights, 1.0 + self.alpha))

    def anr_lambda(self, logits: torch.Tensor) -> torch.Tensor:
        """ANR's lambda = anr_scale * (1 - sigmoid(z)) + anr_offset (not detached), same shape as z."""
        return self.anr_scale * (1.0 - torch.sigmoid(logits)) + self.anr_offset

    def loss_matrix(
        self, logits: torch.Tensor, targets: torch.Tensor, bias_shift: float = 0.0
    ) -> torch.Tensor:
        """(B, C) per-entry losses before reconsideration and reduction.

        ``bias_shift`` adds ``bias_shift * b`` to the logits first (only the reference quirk uses it).
        """
        targets = targets.to(logits.dtype)
        positive = targets > 0.5
        bias = self.logit_bias().to(logits.dtype)
        raw = logits + bias_shift * bias if bias_shift else logits
        weights = self.rebalance_weights(targets)
        adjusted = raw + bias
        if self.negatives == "scaled":
            adjusted = torch.where(positive, adjusted, adjusted * self.neg_scale)
            weights = torch.where(positive, weights, weights / self.neg_scale)
        elif self.negatives == "adaptive":
            lam = self.anr_lambda(raw)
            adjusted = torch.where(positive, adjusted, adjusted * lam)
            weights = torch.where(positive, weights, weights / lam.detach())
        bce = F.binary_cross_entropy_with_logits(adjusted, targets, reduction="none")
        loss = weights * bce
        if self.focal:
            p_t = torch.exp(-bce)  # sigmoid(z') for positives, sigmoid(-z') for negatives
            loss = self.balance * (1.0 - p_t) ** self.gamma * loss
        return loss

    def reconsider_mask(self, losses: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        """(B, C) bool: the entries LLA / LLM replace at ``epoch`` (none at epoch 0)."""
        negative = targets <= 0.5
        k = num_reconsidered(losses.numel(), epoch, self.large_loss_rate, self.reference_quirks)
        if k == 0:
            return torch.zeros_like(negative)
        values = losses.detach()
        if self.reference_quirks:
            masked = values * negative
            threshold = torch.topk(masked.flatten(), k).values[-1]
            return ~(masked < threshold)
        k = min(k, int(negative.sum()))
        if k == 0:
            return torch.zeros_like(negative)
        masked = torch.where(negative, values, torch.full_like(values, -math.inf))
        threshold = torch.topk(masked.flatten(), k).values[-1]
        return negative & (masked >= threshold)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """Scalar loss of (B, C) logits against (B, C) targets at the 0-based training ``epoch``."""
        if logits.ndim != 2 or logits.shape != targets.shape or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}; "
                f"expected both (B, {self.num_classes})"
            )
        targets = targets.clamp(min=0).to(logits.dtype)  # uncertain (-1) -> 0
        losses = self.loss_matrix(logits, targets)
        if self.large_loss is not None and epoch >= 1:
            replace = self.reconsider_mask(losses, targets, int(epoch))
            if self.large_loss == "abandon":
                replacement = torch.zeros_like(losses)
            else:
                shift = 1.0 if self.reference_quirks and self.prior_bias else 0.0
                replacement = self.loss_matrix(logits, 1.0 - targets, bias_shift=shift)
            losses = torch.where(replace, replacement, losses)
        return losses.mean()


def build_loss(name: str, num_classes: int, **overrides: Any) -> ResampleLoss:
    """One of the six losses by name (``LOSS_NAMES``), with keyword overrides of :class:`ResampleLoss`."""
    if name not in LOSS_CONFIGS:
        from medzoo.errors import MedzooDataError

        raise MedzooDataError("model.loss", repr(name), f"one of {', '.join(LOSS_NAMES)}")
    return ResampleLoss(num_classes, **{**LOSS_CONFIGS[name], **overrides})
