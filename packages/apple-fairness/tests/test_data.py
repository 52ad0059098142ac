"""Layouts, the demo set and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from apple_fairness.data import SegmentationFairnessDataModule
from apple_fairness.synthetic import make_fairness_demo
from medzoo.errors import MedzooDataError
from medzoo.io import read_image, write_png


def test_demo_is_deterministic_and_unfair_by_construction(tmp_path):
    a = make_fairness_demo(tmp_path / "a", num_images=6, size=32, seed=3)
    b = make_fairness_demo(tmp_path / "b", num_images=6, size=32, seed=3)
    assert a.read_bytes() == b.read_bytes()
    for name in pd.read_csv(a)["image"]:
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    table = pd.read_csv(a)
    assert set(table["group"]) == {"A", "B"}
    # group B images are brighter and their nodule contrast is weaker
    stats = {}
    for group in ("A", "B"):
        rows = table[table["group"] == group]
        contrast, mean = [], []
        for name in rows["image"]:
            image = read_image(tmp_path / "a/images" / name).array / 255.0
            mask = read_image(tmp_path / "a/masks" / name).array.astype(bool)
            contrast.append(image[~mask].mean() - image[mask].mean())
            mean.append(image[~mask].mean())
        stats[group] = (np.mean(contrast), np.mean(mean))
    assert stats["B"][0] < stats["A"][0] and stats["B"][1] > stats["A"][1]


def test_generic_layout_splits_and_samples(demo_root):
    dm = SegmentationFairnessDataModule(
        demo_root, attribute="group", image_size=(16, 16), val_fraction=0.25, test_fraction=0.25
    )
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 12, "val": 6, "test": 6} and dm.group_names == ["A", "B"]
    names = [r.image.name for split in dm.datasets.values() for r in split.records]
    assert len(set(names)) == 24  # disjoint
    sample = dm.datasets["train"][0]
    assert (
        sample["image"].shape == (1, 16, 16)
        and 0 <= float(sample["image"].min()) <= float(sample["image"].max()) <= 1
    )
    assert sample["mask"].shape == (16, 16) and set(sample["mask"].unique().tolist()) <= {0, 1}
    assert sample["group"].dtype == torch.long


def test_split_column_and_fixed_group_order(demo_root, tmp_path):
    table = pd.read_csv(demo_root / "metadata.csv")
    table["split"] = ["train"] * 12 + ["validate"] * 6 + ["test"] * 6
    table["image"] = [str(demo_root / "images" / n) for n in table["image"]]
    table["mask"] = [str(demo_root / "masks" / n) for n in table["mask"]]
    table.to_csv(tmp_path / "metadata.csv", index=False)
    dm = SegmentationFairnessDataModule(tmp_path, attribute="group", groups=["B", "A"], image_size=(16, 16))
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 12, "val": 6, "test": 6}
    first = dm.datasets["train"].records[0]
    assert dm.datasets["train"][0]["group"] == (0 if first.attribute == "B" else 1)


def _write_case(root, name, image_shape, mask_shape, attribute):
    write_png(root / "images" / name, np.zeros(image_shape, np.uint8))
    write_png(root / "masks" / name, np.zeros(mask_shape, np.uint8))
    return {"image": name, "mask": name, "sex": attribute}


def _layout(tmp_path, rows):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(tmp_path / "metadata.csv", index=False)
    return SegmentationFairnessDataModule(tmp_path, image_size=(8, 8), val_fraction=0.0, test_fraction=0.0)


def test_missing_attribute_column_and_value(tmp_path):
    rows = [_write_case(tmp_path, f"{i}.png", (8, 8), (8, 8), s) for i, s in enumerate(["F", "M", None])]
    with pytest.raises(MedzooDataError, match=r"no 'sex' value in rows \[2\]"):
        _layout(tmp_path, rows).setup("fit")
    for row in rows:
        row.pop("sex")
    with pytest.raises(MedzooDataError, match="columns image, mask and sex"):
        _layout(tmp_path, rows).setup("fit")


def test_single_group_is_an_error(tmp_path):
    rows = [_write_case(tmp_path, f"{i}.png", (8, 8), (8, 8), "F") for i in range(3)]
    with pytest.raises(MedzooDataError, match=r"a single group .F. in 3 samples"):
        _layout(tmp_path, rows).setup("fit")


def test_mask_of_another_size_is_an_error(tmp_path):
    rows = [
        _write_case(tmp_path, "0.png", (8, 8), (8, 9), "F"),
        _write_case(tmp_path, "1.png", (8, 8), (8, 8), "M"),
    ]
    dm = _layout(tmp_path, rows)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    bad = next(i for i, r in enumerate(dataset.records) if r.image.name == "0.png")
    with pytest.raises(MedzooDataError, match=r"image size \(8, 8\) and mask size \(8, 9\)"):
        dataset[bad]


def test_missing_root_and_bad_layout(tmp_path):
    with pytest.raises(MedzooDataError, match="one of"):
        SegmentationFairnessDataModule(tmp_path, layout="nifti")
    with pytest.raises(MedzooDataError, match="absent: found no such folder"):
        SegmentationFairnessDataModule(tmp_path / "absent", layout="tusc").setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedzooDataError, match=r"metadata\.csv: found no such file"):
        SegmentationFairnessDataModule(tmp_path / "empty", layout="tusc").setup("fit")


def _fairseg(root, n=6):
    names = []
    for i in range(n):
        mask = np.zeros((12, 12), np.int8)
        mask[3:9, 3:9] = -1  # rim
        mask[5:7, 5:7] = -2  # cup
        np.savez(
            root / f"data_{i:05d}.npz",
            slo_fundus=np.full((12, 12), 40 * i, np.uint8),
            disc_cup_mask=mask,
            race=np.array([2, 3, 7][i % 3]),
            gender=np.array(i % 2),
            age=np.array(365 * (50 + 5 * i)),
        )
        names.append(f"data_{i:05d}.npz")
    (root / "lists").mkdir()
    (root / "lists/train.txt").write_text("\n".join(names[:4]) + "\n")
    (root / "lists/test.txt").write_text("\n".join(names[4:]) + "\n")


def test_fairseg_layout(tmp_path):
    _fairseg(tmp_path)
    dm = SegmentationFairnessDataModule(
        tmp_path, layout="fairseg", attribute="race", num_classes=3, image_size=(12, 12), val_fraction=0.5
    )
    dm.setup("fit")
    assert dm.group_names == ["Asian", "Black", "White"]
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 3, "val": 1, "test": 2}
    sample = dm.datasets["test"][0]
    counts = torch.bincount(sample["mask"].flatten(), minlength=3).tolist()
    assert counts == [144 - 36, 32, 4]  # background, rim (-1 -> 1), cup (-2 -> 2)
    ages = SegmentationFairnessDataModule(
        tmp_path, layout="fairseg", attribute="age", num_classes=3, image_size=(12, 12)
    )
    ages.setup("fit")
    assert ages.group_names == ["<60", ">=60"]
    (tmp_path / "lists/test.txt").write_text("data_99999.npz\n")
    with pytest.raises(MedzooDataError, match=r"data_99999\.npz: found no such file"):
        SegmentationFairnessDataModule(tmp_path, layout="fairseg", attribute="race").setup("fit")


def test_numeric_attribute_bins(tmp_path):
    rows = [_write_case(tmp_path, f"{i}.png", (8, 8), (8, 8), "F") for i in range(4)]
    for row, age in zip(rows, [30, 45, 61, 70], strict=True):
        row["age"] = age
    dm = _layout(tmp_path, rows)
    dm.attribute, dm.attribute_bins = "age", [60.0]
    dm.setup("fit")
    assert dm.group_names == ["0", "1"]


def test_real_shenzhen_through_the_generic_layout(shenzhen):
    dm = SegmentationFairnessDataModule(
        shenzhen, csv="cases.csv", mask_dir="lung_masks", attribute="sex", image_size=(64, 64),
        val_fraction=0.2, test_fraction=0.2,
    )  # fmt: skip
    dm.setup("test")
    assert dm.group_names == ["Female", "Male"]
    assert sum(len(d) for d in dm.datasets.values()) == 11
    sample = dm.datasets["test"][0]
    assert sample["image"].shape == (1, 64, 64) and set(sample["mask"].unique().tolist()) == {0, 1}
    assert 0.1 < float(sample["mask"].float().mean()) < 0.6  # both lungs, thresholded 0/255 masks
