"""Metrics for medzoo: landmarks, classification, segmentation, fairness and adversarial detection.

All functions are pure: they take numpy arrays or torch tensors (moved to the CPU) and return python floats
or numpy arrays. Each is cross-checked in the tests against scikit-learn, MONAI or fairlearn. Segmentation
metrics import MONAI lazily, on their first call.
"""

from medzoo.metrics.adversarial import detection_auroc, tpr_at_tnr
from medzoo.metrics.classification import (
    auroc,
    average_precision,
    f1_scores,
    group_classes_by_frequency,
    mean_average_precision,
)
from medzoo.metrics.fairness import equity_scaled_metric, max_min_gap, metric_per_group
from medzoo.metrics.landmarks import mean_radial_error, radial_errors, successful_detection_rate
from medzoo.metrics.segmentation import dice, hd95, iou

__all__ = [
    "auroc",
    "average_precision",
    "detection_auroc",
    "dice",
    "equity_scaled_metric",
    "f1_scores",
    "group_classes_by_frequency",
    "hd95",
    "iou",
    "max_min_gap",
    "mean_average_precision",
    "mean_radial_error",
    "metric_per_group",
    "radial_errors",
    "successful_detection_rate",
    "tpr_at_tnr",
]
