"""The fairness report: Dice/IoU overall and per group, the gap, ES-Dice/ES-IoU (both definitions) and
how well the attribute can be read from the latent, as JSON, CSV and a bar plot PNG.

Definitions (``medzoo.metrics``):

- per-sample Dice / IoU: mean over the foreground classes of one image (an empty target predicted empty
  scores 1); ``overall`` = mean over samples; ``group`` = mean over the group's samples;
- ``gap`` = max - min over groups (fairlearn's ``difference(method="between_groups")``);
- ``es_sum`` = overall / (1 + sum_g |group_g - overall|), Harvard-FairSeg's ES-Dice / ES-IoU (reported
  as the headline ES metric, as in APPLE's tables); ``es_std`` = overall / (1 + std_g(group_g));
- attribute leakage: accuracy and balanced accuracy (mean per-group recall; chance = 1 / number of
  groups) of a discriminator trained alongside APPLE on the clean latent ``z`` ("before") and of
  APPLE's own ``D_p`` on ``z'`` ("after"); and of two fresh discriminators trained after APPLE on the frozen
  ``z`` and ``z'`` (``retrained_on_*``), which says whether anyone, not only ``D_p``, can still read the
  attribute. A balanced accuracy far *below* chance leaks as much as one far above (the labels are merely
  swapped); ``distance_from_chance`` = |balanced accuracy - chance| is the leakage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medzoo.errors import MedzooDataError
from medzoo.io import write_csv, write_json, write_png
from medzoo.metrics import equity_scaled_metric, max_min_gap, metric_per_group

__all__ = [
    "attribute_leakage",
    "bar_plot",
    "fairness_summary",
    "group_metric_summary",
    "write_fairness_report",
]


def _mean(_: np.ndarray, values: np.ndarray) -> float:
    return float(np.mean(values))


def group_metric_summary(values: Any, groups: Any, group_names: Sequence[str]) -> dict[str, Any]:
    """``{"overall", "per_group": {name: mean}, "gap", "es_sum", "es_std"}`` of per-sample ``values`` (N,)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    groups = np.asarray(groups).ravel()
    if values.shape != groups.shape or values.size == 0:
        raise MedzooDataError(
            "fairness report", f"{values.size} values and {groups.size} groups", "one group per value, N > 0"
        )
    by_id = metric_per_group(_mean, values, values, groups)
    per_group = {
        str(group_names[int(g)]) if int(g) < len(group_names) else str(g): v for g, v in by_id.items()
    }
    overall = float(values.mean())
    return {
        "overall": overall,
        "per_group": per_group,
        "gap": max_min_gap(per_group),
        "es_sum": equity_scaled_metric(overall, per_group, "sum"),
        "es_std": equity_scaled_metric(overall, per_group, "std"),
    }


def attribute_leakage(pred: Any, groups: Any, num_groups: int) -> dict[str, float]:
    """Accuracy and balanced accuracy of attribute predictions (N,) against the true groups (N,)."""
    pred, groups = np.asarray(pred).ravel(), np.asarray(groups).ravel()
    recalls = [float(np.mean(pred[groups == g] == g)) for g in range(num_groups) if np.any(groups == g)]
    balanced, chance = float(np.mean(recalls)), 1.0 / len(recalls)
    return {
        "accuracy": float(np.mean(pred == groups)),
        "balanced_accuracy": balanced,
        "chance_balanced_accuracy": chance,
        "distance_from_chance": abs(balanced - chance),
    }


def fairness_summary(outputs: dict[str, Any], group_names: Sequence[str], num_groups: int) -> dict[str, Any]:
    """The report from gathered per-sample outputs.

    Args:
        outputs: ``group`` (N,), and for each model ``m`` in (``apple``, ``baseline``) present
            ``dice_m``/``iou_m`` (N,); optionally ``probe_pred`` (attribute predicted from ``z``) and
            ``disc_pred`` (from ``z'``).
        group_names: attribute value of each group index.
        num_groups: number of groups of the discriminators.
    """
    groups = np.asarray(outputs["group"])
    report: dict[str, Any] = {"num_samples": int(groups.size), "groups": list(group_names)}
    report["group_sizes"] = {
        str(group_names[g]) if g < len(group_names) else str(g): int(np.sum(groups == g))
        for g in np.unique(groups)
    }
    for model in ("baseline", "apple"):
        if f"dice_{model}" in outputs:
            report[model] = {
                "dice": group_metric_summary(outputs[f"dice_{model}"], groups, group_names),
                "iou": group_metric_summary(outputs[f"iou_{model}"], groups, group_names),
            }
    leakage = {}
    if "probe_pred" in outputs:
        leakage["before_z"] = attribute_leakage(outputs["probe_pred"], groups, num_groups)
    if "disc_pred" in outputs:
        leakage["after_z_perturbed"] = attribute_leakage(outputs["disc_pred"], groups, num_groups)
    # Fresh discriminators trained after APPLE on frozen latents (-1 = not run).
    for key, name in (
        ("retrained_z_pred", "retrained_on_z"),
        ("retrained_zp_pred", "retrained_on_z_perturbed"),
    ):
        if key in outputs and np.all(np.asarray(outputs[key]) >= 0):
            leakage[name] = attribute_leakage(outputs[key], groups, num_groups)
    if leakage:
        report["attribute_leakage"] = leakage
    if "baseline" in report and "apple" in report:
        report["dice_change"] = report["apple"]["dice"]["overall"] - report["baseline"]["dice"]["overall"]
    return report


def _table(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for model in ("baseline", "apple"):
        for metric in ("dice", "iou"):
            summary = report.get(model, {}).get(metric)
            if summary is None:
                continue
            row = {"model": model, "metric": metric, "overall": summary["overall"]}
            row.update({f"group_{k}": v for k, v in summary["per_group"].items()})
            row.update({"gap": summary["gap"], "es_sum": summary["es_sum"], "es_std": summary["es_std"]})
            rows.append(row)
    return pd.DataFrame(rows)


_COLOURS = {"baseline": (120, 120, 120), "apple": (214, 39, 40)}


def bar_plot(report: dict[str, Any], metric: str = "dice", width: int = 640, height: int = 400) -> np.ndarray:
    """An RGB uint8 bar chart of ``metric`` overall and per group, one bar per model (grey baseline, red
    APPLE), on a 0-1 axis with gridlines every 0.2; the legend and labels are drawn with Pillow's font."""
    from PIL import Image, ImageDraw

    models = [m for m in ("baseline", "apple") if m in report]
    categories = ["overall", *report[models[0]][metric]["per_group"]] if models else []
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 50, width - 20, 40, height - 50
    for tick in np.linspace(0, 1, 6):
        y = bottom - tick * (bottom - top)
        draw.line((left, y, right, y), fill=(220, 220, 220))
        draw.text((8, y - 6), f"{tick:.1f}", fill="black")
    draw.line((left, top, left, bottom), fill="black")
    draw.line((left, bottom, right, bottom), fill="black")
    slot = (right - left) / max(1, len(categories))
    bar = slot * 0.8 / max(1, len(models))
    for i, category in enumerate(categories):
        x0 = left + i * slot + slot * 0.1
        for j, model in enumerate(models):
            summary = report[model][metric]
            value = summary["overall"] if category == "overall" else summary["per_group"][category]
            y = bottom - float(np.clip(value, 0, 1)) * (bottom - top)
            draw.rectangle((x0 + j * bar, y, x0 + (j + 1) * bar - 2, bottom), fill=_COLOURS[model])
            draw.text((x0 + j * bar, y - 12), f"{value:.3f}", fill="black")
        draw.text((x0, bottom + 8), str(category), fill="black")
    for j, model in enumerate(models):
        draw.rectangle((left + j * 110, 10, left + j * 110 + 12, 22), fill=_COLOURS[model])
        draw.text((left + j * 110 + 16, 10), f"{model} {metric}", fill="black")
    return np.asarray(image)


def write_fairness_report(
    folder: str | Path, report: dict[str, Any], per_sample: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write ``fairness_report.json``, ``fairness_report.csv`` (one row per model and metric),
    ``fairness_dice.png`` (the bar plot) and ``per_sample.csv`` (when given) atomically into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_json(folder / "fairness_report.json", report),
        "csv": write_csv(folder / "fairness_report.csv", _table(report)),
        "plot": write_png(folder / "fairness_dice.png", bar_plot(report, "dice")),
    }
    if per_sample is not None:
        paths["per_sample"] = write_csv(folder / "per_sample.csv", per_sample)
    return paths
