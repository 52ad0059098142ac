from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hfc_attack.data import ClassificationDataModule, load_image, make_demo_set
from medzoo.errors import MedzooDataError
from medzoo.io import write_png


def _png(path: Path, value: int, dtype=np.uint8) -> Path:
    return write_png(path, np.full((10, 12), value, dtype=dtype))


def test_load_image_scales_by_dtype_and_resizes(tmp_path):
    eight = load_image(_png(tmp_path / "a.png", 255), (4, 4), 3)
    sixteen = load_image(_png(tmp_path / "b.png", 65535 // 2, np.uint16), (4, 4), 1)
    assert eight.shape == (3, 4, 4) and torch.allclose(eight, torch.ones(3, 4, 4))
    assert sixteen.shape == (1, 4, 4) and torch.allclose(sixteen, torch.full((1, 4, 4), 0.5), atol=1e-4)


def test_pneumonia_layout_official_splits(tmp_path):
    root = make_demo_set(tmp_path / "demo", n_images=40, size=32)
    data = ClassificationDataModule(root, layout="pneumonia", image_size=(32, 32))
    data.setup()
    sizes = {s: len(data.dataset(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 28, "val": 4, "test": 8}
    labels = [r.label for r in data.dataset("train").records]
    assert labels.count(0) == labels.count(1) == 14
    assert all(("PNEUMONIA" in str(r.path)) == (r.label == 1) for r in data.dataset("test").records)
    sample = data.dataset("val")[0]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].min() >= 0 and sample["image"].max() <= 1


def test_aptos_layout_binarises_grades(tmp_path):
    codes = [f"id{i}" for i in range(10)]
    for code in codes:
        _png(tmp_path / "train_images" / f"{code}.png", 100)
    pd.DataFrame({"id_code": codes, "diagnosis": [0, 1, 2, 3, 4, 0, 0, 2, 1, 0]}).to_csv(
        tmp_path / "train.csv", index=False
    )
    data = ClassificationDataModule(
        tmp_path, layout="aptos", image_size=(8, 8), split_fractions=(0.6, 0.2, 0.2)
    )
    records = data.records()
    by_code = {r.path.stem: r.label for r in records}
    assert by_code == {c: int(g > 0) for c, g in zip(codes, [0, 1, 2, 3, 4, 0, 0, 2, 1, 0], strict=True)}
    assert sorted(r.split for r in records).count("train") == 6


def test_csv_and_folder_layouts(tmp_path):
    for i in range(6):
        _png(tmp_path / "f" / ("benign" if i % 2 else "malignant") / f"{i}.png", 10 * i)
    records = ClassificationDataModule(
        tmp_path / "f", layout="folder", split_fractions=(0.5, 0.25, 0.25)
    ).records()
    assert {r.label for r in records if r.path.parent.name == "benign"} == {0}
    table = pd.DataFrame(
        {
            "image": [f"f/benign/{i}.png" for i in (1, 3, 5)],
            "label": [1, 0, 1],
            "split": ["train", "validate", "test"],
        }
    )
    table.to_csv(tmp_path / "labels.csv", index=False)
    records = ClassificationDataModule(tmp_path, layout="csv").records()
    assert [(r.label, r.split) for r in records] == [(1, "train"), (0, "val"), (1, "test")]


def test_bad_data(tmp_path):
    with pytest.raises(MedzooDataError, match="one of"):
        ClassificationDataModule(tmp_path, layout="imagenet")
    with pytest.raises(MedzooDataError, match="NORMAL"):
        ClassificationDataModule(tmp_path, layout="pneumonia").records()
    pd.DataFrame({"id_code": ["a"], "diagnosis": [7]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(MedzooDataError, match="0-4"):
        ClassificationDataModule(tmp_path, layout="aptos").records()
    pd.DataFrame({"image": ["x.png"], "label": [0], "split": ["holdout"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(MedzooDataError, match="holdout"):
        ClassificationDataModule(tmp_path, layout="csv").records()
