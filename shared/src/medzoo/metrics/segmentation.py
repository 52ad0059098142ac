"""Segmentation metrics on integer label maps, computed with MONAI.

Inputs are label maps ``pred`` and ``target`` of shape (N, *spatial) (2D: (N, H, W); 3D: (N, H, W, D)) with
integer labels in ``[0, num_classes)``; 0 is the background. They are one-hot encoded and passed to
``monai.metrics.DiceMetric``, ``monai.metrics.compute_iou`` and ``monai.metrics.compute_hausdorff_distance``.
MONAI is imported inside the functions because importing it takes seconds.

Values are computed by MONAI in float32 and returned as float64 numpy arrays.

Empty masks (a class absent from the target of an image, and possibly from its prediction) are scored by
the rule below, set here explicitly whatever MONAI's defaults are, and chosen with ``ignore_empty``:

- ``ignore_empty=False`` (default): "nothing there, nothing predicted" is perfect and any miss is the worst
  value. Target and prediction empty: Dice = IoU = 1, HD95 = 0. Exactly one of them empty: Dice = IoU = 0,
  HD95 = inf.
- ``ignore_empty=True`` (MONAI's ``DiceMetric`` default): an empty target gives NaN for all three metrics, to
  be left out with ``np.nanmean``; an empty prediction of a non-empty target still gives Dice = IoU = 0 and
  HD95 = inf.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medzoo.errors import MedzooDataError

if TYPE_CHECKING:
    import torch

__all__ = ["dice", "hd95", "iou"]

_REDUCTIONS = ("none", "mean_batch", "mean")
# Without num_classes, labels up to this are accepted (count = max label + 1); above it, pass num_classes.
_MAX_INFERRED_CLASSES = 64


def _one_hot(
    pred: Any, target: Any, num_classes: int | None, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label maps (N, *spatial) -> one-hot float tensors (N, C, *spatial) on the CPU."""
    import torch

    p = torch.as_tensor(pred).detach().cpu()
    t = torch.as_tensor(target).detach().cpu()
    if p.shape != t.shape:
        raise MedzooDataError(
            where, f"pred of shape {tuple(p.shape)} and target of shape {tuple(t.shape)}", "equal shapes"
        )
    if p.ndim < 3:
        raise MedzooDataError(where, f"label maps of shape {tuple(p.shape)}", "(N, H, W) or (N, H, W, D)")
    if (p.is_floating_point() or t.is_floating_point()) and not (
        torch.equal(p, p.round()) and torch.equal(t, t.round())
    ):
        raise MedzooDataError(where, "non-integer labels", "integer label maps (argmax the logits first)")
    p, t = p.long(), t.long()
    if p.numel() == 0:
        raise MedzooDataError(where, "empty label maps", "at least one pixel")
    top = int(max(p.max(), t.max()))
    if num_classes is None:
        # Inferring the count from the largest label lets one stray 255 make 256 one-hot channels.
        if top >= _MAX_INFERRED_CLASSES:
            raise MedzooDataError(
                where,
                f"label {top} with num_classes unset",
                "num_classes passed explicitly (labels < num_classes)",
            )
        num_classes = max(top + 1, 2)
    outside = torch.unique(torch.cat([p[(p < 0) | (p >= num_classes)], t[(t < 0) | (t >= num_classes)]]))
    if outside.numel():
        raise MedzooDataError(
            where,
            f"labels {outside[:8].tolist()} outside [0, {num_classes})",
            f"labels in [0, {num_classes})",
        )
    # (N, *spatial, C) -> (N, C, *spatial)
    p = torch.nn.functional.one_hot(p, num_classes).movedim(-1, 1).float()
    t = torch.nn.functional.one_hot(t, num_classes).movedim(-1, 1).float()
    return p, t


def _reduce(values: torch.Tensor, reduction: str) -> np.ndarray | float:
    v = values.double().numpy()
    if reduction == "none":
        return v
    if reduction == "mean_batch":
        return _nanmean(v, axis=0)
    return float(_nanmean(v, axis=None))


def _nanmean(v: np.ndarray, axis: int | None) -> np.ndarray | float:
    # An all-NaN slice is NaN without numpy's "mean of empty slice" warning.
    finite_count = np.sum(~np.isnan(v), axis=axis)
    total = np.nansum(v, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite_count > 0, total / np.maximum(finite_count, 1), np.nan)


def _check_reduction(reduction: str, where: str) -> None:
    if reduction not in _REDUCTIONS:
        raise MedzooDataError(where, f"reduction={reduction!r}", f"one of {_REDUCTIONS}")


def _fill_empty(
    values: torch.Tensor,
    p: torch.Tensor,
    t: torch.Tensor,
    both_empty: float,
    target_empty: float,
    ignore_empty: bool,
) -> torch.Tensor:
    """Overwrite the empty-target cases with the documented values (see the module docstring)."""
    spatial = tuple(range(2, p.ndim))
    pred_has = p.sum(dim=spatial) > 0
    target_has = t.sum(dim=spatial) > 0
    values = values.clone()
    if ignore_empty:
        values[~target_has] = float("nan")
    else:
        values[~target_has & ~pred_has] = both_empty
        values[~target_has & pred_has] = target_empty
    return values


def _drop_background(p: torch.Tensor, t: torch.Tensor, include_background: bool):
    return (p, t) if include_background else (p[:, 1:], t[:, 1:])


def dice(
    pred: Any,
    target: Any,
    num_classes: int | None = None,
    include_background: bool = False,
    *,
    ignore_empty: bool = False,
    reduction: str = "none",
) -> np.ndarray | float:
    """Dice coefficient ``2|P & T| / (|P| + |T|)`` per image and class (``monai.metrics.DiceMetric``).

    Args:
        pred: predicted label map (N, *spatial), integers in [0, num_classes); numpy or torch.
        target: true label map, same shape.
        num_classes: number of classes including background; default ``max label + 1`` (at least 2). Pass
            it whenever a class may be missing from a batch, so the columns stay stable.
        include_background: also score class 0.
        ignore_empty: how an empty target is scored, see the module docstring.
        reduction: ``"none"`` -> (N, C') array, ``"mean_batch"`` -> (C',) NaN-ignoring mean over images,
            ``"mean"`` -> one float. C' = num_classes - 1 without background.

    Returns:
        Dice in [0, 1] (float64), NaN where ``ignore_empty`` leaves it undefined.
    """
    from monai.metrics import DiceMetric

    _check_reduction(reduction, "dice")
    p, t = _drop_background(*_one_hot(pred, target, num_classes, "dice"), include_background)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=ignore_empty)
    values = _fill_empty(metric(y_pred=p, y=t), p, t, 1.0, 0.0, ignore_empty)
    return _reduce(values, reduction)


def iou(
    pred: Any,
    target: Any,
    num_classes: int | None = None,
    include_background: bool = False,
    *,
    ignore_empty: bool = False,
    reduction: str = "none",
) -> np.ndarray | float:
    """Intersection over union (Jaccard) ``|P & T| / |P | T|`` per image and class (MONAI ``compute_iou``).

    Same arguments, empty-mask rules and return shapes as :func:`dice`; values in [0, 1].
    """
    from monai.metrics import compute_iou

    _check_reduction(reduction, "iou")
    p, t = _drop_background(*_one_hot(pred, target, num_classes, "iou"), include_background)
    values = compute_iou(y_pred=p, y=t, include_background=True, ignore_empty=ignore_empty)
    values = _fill_empty(values, p, t, 1.0, 0.0, ignore_empty)
    return _reduce(values, reduction)


def hd95(
    pred: Any,
    target: Any,
    spacing: float | Sequence[float] | Sequence[Sequence[float]] | None = None,
    num_classes: int | None = None,
    include_background: bool = False,
    *,
    ignore_empty: bool = False,
    percentile: float = 95.0,
    reduction: str = "none",
) -> np.ndarray | float:
    """95th-percentile symmetric Hausdorff distance between the mask boundaries, per image and class.

    Uses ``monai.metrics.compute_hausdorff_distance(percentile=95, directed=False)``: boundary pixels are a
    mask minus its (cross-shaped) binary erosion, with outside-image counted as background; for each
    direction (pred -> target, target -> pred) the 95th percentile (linear interpolation) of the Euclidean
    distances from one boundary's pixels to the nearest pixel of the other boundary is taken, and HD95 is
    the larger of the two.

    Args:
        pred: predicted label map (N, *spatial) of integers; numpy or torch.
        target: true label map, same shape.
        spacing: voxel size in mm in the array's axis order (``*spatial``): ``None`` (1, distances in
            voxels), a scalar, a sequence of length ``len(spatial)``, or one such sequence per image.
        num_classes, include_background, ignore_empty, reduction: as in :func:`dice`.
        percentile: the percentile (0-100); 100 gives the classic Hausdorff distance.

    Returns:
        Distances >= 0 in mm (voxels when ``spacing`` is None), float64; inf when exactly one of the
        masks is empty, NaN where ``ignore_empty`` leaves it undefined.
    """
    from monai.metrics import compute_hausdorff_distance

    _check_reduction(reduction, "hd95")
    p, t = _drop_background(*_one_hot(pred, target, num_classes, "hd95"), include_background)
    if spacing is not None:
        values = np.asarray(spacing, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise MedzooDataError(
                "hd95 spacing", f"values {values.ravel()[:6].tolist()}", "finite positive mm"
            )
        spacing = values.tolist()
    with warnings.catch_warnings():
        # Empty masks are handled below; MONAI's own deprecation notice about an internal call is noise.
        warnings.filterwarnings("ignore", message=".*is all 0.*")
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        values = compute_hausdorff_distance(
            y_pred=p, y=t, include_background=True, percentile=percentile, spacing=spacing
        ).double()
    spatial = tuple(range(2, p.ndim))
    pred_has = p.sum(dim=spatial) > 0
    target_has = t.sum(dim=spatial) > 0
    values[target_has & ~pred_has] = float("inf")
    values = _fill_empty(values, p, t, 0.0, float("inf"), ignore_empty)
    return _reduce(values, reduction)
