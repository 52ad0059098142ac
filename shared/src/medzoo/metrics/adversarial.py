"""Scores of adversarial-example detectors: AUROC and the true-positive rate at a fixed true-negative rate.

Adversarial examples are the positive class and a higher detector score means "more adversarial".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.metrics._convert import to_numpy
from medzoo.metrics.classification import auroc

__all__ = ["detection_auroc", "tpr_at_tnr"]


def _scores(clean_scores: Any, adversarial_scores: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    clean = to_numpy(clean_scores, dtype=np.float64).ravel()
    adv = to_numpy(adversarial_scores, dtype=np.float64).ravel()
    if clean.size == 0 or adv.size == 0:
        raise MedzooDataError(
            where, f"{clean.size} clean and {adv.size} adversarial scores", "at least one of each"
        )
    if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(adv))):
        raise MedzooDataError(where, "non-finite scores (NaN or inf)", "finite detector scores")
    return clean, adv


def detection_auroc(clean_scores: Any, adversarial_scores: Any) -> float:
    """AUROC of telling adversarial (positive) from clean (negative) inputs by score.

    Args:
        clean_scores: (N_clean,) detector scores of clean inputs.
        adversarial_scores: (N_adv,) detector scores of adversarial inputs.

    Returns:
        AUROC in [0, 1]; a tie between a clean and an adversarial score counts 1/2.
    """
    clean, adv = _scores(clean_scores, adversarial_scores, "detection_auroc")
    labels = np.r_[np.zeros(clean.size, dtype=bool), np.ones(adv.size, dtype=bool)]
    return float(auroc(labels, np.r_[clean, adv]))


def tpr_at_tnr(
    clean_scores: Any, adversarial_scores: Any, tnr: float = 0.95, *, return_threshold: bool = False
) -> float | tuple[float, float]:
    """Fraction of adversarial inputs detected at a threshold that keeps at least ``tnr`` of clean ones.

    The threshold ``t`` is the smallest clean score such that at least ``tnr`` of the clean scores are
    ``<= t``, i.e. the ``ceil(tnr * N_clean)``-th smallest clean score. An input is flagged adversarial when
    ``score > t``. Ties at the threshold therefore count as clean: clean inputs tied with ``t`` are true
    negatives, and adversarial inputs tied with ``t`` are missed (a conservative TPR). This is the best TPR
    of any ROC operating point with false-positive rate ``<= 1 - tnr``.

    Args:
        clean_scores: (N_clean,) detector scores of clean inputs.
        adversarial_scores: (N_adv,) detector scores of adversarial inputs.
        tnr: the required true-negative rate in (0, 1] (HFC reports TPR at 90% TNR: ``tnr=0.9``).
        return_threshold: also return ``t``.

    Returns:
        TPR in [0, 1], or ``(tpr, t)`` when ``return_threshold``.
    """
    if not 0.0 < tnr <= 1.0:
        raise MedzooDataError("tpr_at_tnr", f"tnr={tnr}", "a rate in (0, 1]")
    clean, adv = _scores(clean_scores, adversarial_scores, "tpr_at_tnr")
    # The 1e-9 keeps e.g. 0.95 * 100 = 95.00000000000001 from asking for 96 clean scores.
    num_kept = max(1, math.ceil(tnr * clean.size - 1e-9))
    threshold = float(np.sort(clean)[num_kept - 1])
    tpr = float(np.mean(adv > threshold))
    return (tpr, threshold) if return_threshold else tpr
