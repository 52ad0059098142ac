"""Fairness metrics: known answers, fairlearn's MetricFrame, and the real Shenzhen lung masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from apple_fairness.report import (
    attribute_leakage,
    fairness_summary,
    group_metric_summary,
    write_fairness_report,
)
from medzoo.io import read_image
from medzoo.metrics import dice


def test_es_metrics_known_answers():
    summary = group_metric_summary([0.9, 0.9, 0.6, 0.6], [0, 0, 1, 1], ["F", "M"])
    assert summary["per_group"] == pytest.approx({"F": 0.9, "M": 0.6})
    assert summary["overall"] == pytest.approx(0.75)
    assert summary["gap"] == pytest.approx(0.3)
    assert summary["es_sum"] == pytest.approx(0.75 / (1 + 0.15 + 0.15))  # FairSeg: sum of |group - overall|
    assert summary["es_std"] == pytest.approx(0.75 / (1 + 0.15))  # std of (0.9, 0.6) = 0.15
    fair = group_metric_summary([0.8, 0.8, 0.8], [0, 1, 1], ["F", "M"])
    assert fair["es_sum"] == pytest.approx(0.8) and fair["gap"] == 0


def test_group_metrics_equal_fairlearn_metricframe():
    from fairlearn.metrics import MetricFrame

    rng = np.random.default_rng(0)
    scores = rng.uniform(0.3, 1.0, 40)
    groups = rng.integers(0, 3, 40)
    summary = group_metric_summary(scores, groups, ["a", "b", "c"])
    frame = MetricFrame(
        metrics=lambda t, p: float(np.mean(p)), y_true=scores, y_pred=scores, sensitive_features=groups
    )
    assert summary["overall"] == pytest.approx(frame.overall)
    assert list(summary["per_group"].values()) == pytest.approx(frame.by_group.to_numpy())
    assert summary["gap"] == pytest.approx(frame.difference(method="between_groups"))
    per_group = frame.by_group.to_numpy()
    expected_sum = frame.overall / (1 + np.abs(per_group - frame.overall).sum())
    assert summary["es_sum"] == pytest.approx(expected_sum)
    assert summary["es_std"] == pytest.approx(frame.overall / (1 + per_group.std()))


def test_attribute_leakage_balanced_accuracy():
    # group 0: 3 of 4 right; group 1: 1 of 2 right -> balanced (0.75 + 0.5) / 2
    leak = attribute_leakage([0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1], 2)
    assert leak["accuracy"] == pytest.approx(4 / 6)
    assert leak["balanced_accuracy"] == pytest.approx(0.625)
    assert leak["chance_balanced_accuracy"] == 0.5
    from sklearn.metrics import balanced_accuracy_score

    assert leak["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0])
    )


def test_report_files(tmp_path):
    outputs = {
        "group": np.array([0, 0, 1, 1]),
        "dice_baseline": np.array([0.9, 0.8, 0.5, 0.6]),
        "iou_baseline": np.array([0.8, 0.7, 0.4, 0.5]),
        "dice_apple": np.array([0.9, 0.8, 0.6, 0.6]),
        "iou_apple": np.array([0.8, 0.7, 0.5, 0.5]),
        "probe_pred": np.array([0, 0, 1, 1]),
        "disc_pred": np.array([0, 1, 0, 1]),
    }
    report = fairness_summary(outputs, ["F", "M"], 2)
    assert report["attribute_leakage"]["before_z"]["balanced_accuracy"] == 1.0
    assert report["attribute_leakage"]["after_z_perturbed"]["balanced_accuracy"] == 0.5
    assert report["dice_change"] == pytest.approx(0.025)
    paths = write_fairness_report(tmp_path, report, pd.DataFrame(outputs))
    assert json.loads(paths["json"].read_text())["apple"]["dice"]["gap"] == pytest.approx(0.25)
    table = pd.read_csv(paths["csv"])
    assert list(table["model"]) == ["baseline", "baseline", "apple", "apple"]
    assert table.loc[0, "group_M"] == pytest.approx(0.55)
    plot = read_image(paths["plot"]).array
    assert plot.shape == (400, 640, 3)
    # the two bar colours are drawn (grey baseline, red APPLE)
    assert (plot == [214, 39, 40]).all(axis=2).sum() > 500 and (plot == [120, 120, 120]).all(
        axis=2
    ).sum() > 500


def test_real_shenzhen_lung_masks_through_the_report(shenzhen, tmp_path):
    cases = pd.read_csv(shenzhen / "cases.csv")
    masks = []
    for name in cases["mask"]:
        mask = read_image(shenzhen / "lung_masks" / name).array
        masks.append((mask[..., 0] if mask.ndim == 3 else mask) >= 128)
    # an imperfect "segmentor": the real mask shifted by 12 pixels to the right
    preds = [np.roll(m, 12, axis=1) for m in masks]
    per_sample = np.array(
        [
            float(dice(p[None].astype(int), m[None].astype(int), 2)[0, 0])
            for p, m in zip(preds, masks, strict=True)
        ]
    )
    groups = (cases["sex"] == "Male").to_numpy().astype(int)
    report = fairness_summary(
        {"group": groups, "dice_baseline": per_sample, "iou_baseline": per_sample}, ["Female", "Male"], 2
    )
    assert report["group_sizes"] == {"Female": 4, "Male": 7}
    dice_summary = report["baseline"]["dice"]
    assert dice_summary["per_group"]["Female"] == pytest.approx(per_sample[groups == 0].mean())
    assert 0.5 < dice_summary["overall"] < 1.0
    assert math.isclose(
        dice_summary["gap"], abs(per_sample[groups == 0].mean() - per_sample[groups == 1].mean())
    )
    paths = write_fairness_report(tmp_path, report)
    assert paths["plot"].is_file() and json.loads(paths["json"].read_text())["groups"] == ["Female", "Male"]
