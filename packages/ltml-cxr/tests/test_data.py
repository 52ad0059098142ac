"""Label tables in the official layouts, stratified splits, the class-aware sampler and the DataModule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ltml_cxr.data import (
    CHESTXRAY14_CLASSES,
    LTML_CLASSES,
    ClassAwareSampler,
    LTMLDataModule,
    iterative_split,
    load_chestxray14,
    load_ltml_mimic,
)
from ltml_cxr.metrics import frequency_groups
from medzoo.errors import MedzooDataError

# Positives per class in the full Data_Entry_2017 table (112,120 images), in CHESTXRAY14_CLASSES order.
NIH_COUNTS = [11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227]


def test_real_nih_table_through_head_medium_tail_grouping(shared_data):
    table = load_chestxray14(shared_data / "cxr-nih", check_images=False)
    assert len(table) == 112_120 and table.class_names == list(CHESTXRAY14_CLASSES)
    assert table.labels.sum(axis=0).astype(int).tolist() == NIH_COUNTS
    assert table.paths[0].name == "00000001_000.png" and table.paths[0].is_file()
    names = np.array(table.class_names)
    # The paper's cuts (head >= 10000, tail < 1000): Atelectasis, Effusion, Infiltration / Hernia.
    groups = frequency_groups(table.labels.sum(axis=0), head_min=10000, tail_below=1000)
    assert names[groups["head"]].tolist() == ["Atelectasis", "Effusion", "Infiltration"]
    assert names[groups["tail"]].tolist() == ["Hernia"]
    assert len(groups["medium"]) == 10
    # Cuts scaled to NIH's size (x 0.3): eight head classes, Hernia still the only tail.
    scaled = frequency_groups(table.labels.sum(axis=0), head_min=3000, tail_below=300)
    assert names[scaled["head"]].tolist() == [
        "Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax", "Consolidation",
        "Pleural_Thickening",
    ]  # fmt: skip
    assert names[scaled["tail"]].tolist() == ["Hernia"] and len(scaled["medium"]) == 5


def _random_labels(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.4, 0.2, 0.1, 0.05, 0.02, 0.01])
    return (rng.random((n, len(prevalence))) < prevalence).astype(np.float32)


def test_iterative_split_keeps_each_label_share():
    labels = _random_labels()
    split = iterative_split(labels, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert set(split) == {"train", "val", "test"}
    assert abs((split == "test").mean() - 0.2) < 0.01 and abs((split == "val").mean() - 0.08) < 0.01
    positives = labels.sum(axis=0)
    for name, share in (("test", 0.2), ("val", 0.08), ("train", 0.72)):
        in_split = labels[split == name].sum(axis=0) / positives
        # Stratified: every label's share is within 3 points (a plain random split misses it on rare labels).
        assert np.abs(in_split - share).max() < 0.03, (name, in_split)
    again = iterative_split(labels, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert (again == split).all()


def test_patient_level_split_keeps_patients_together():
    labels = _random_labels(900, seed=1)
    patients = np.repeat(np.arange(300), 3)
    split = iterative_split(labels, groups=patients, seed=0)
    for patient in range(300):
        assert len(set(split[patients == patient])) == 1
    assert abs((split == "test").mean() - 0.2) < 0.02


def test_official_test_split_is_kept():
    labels = _random_labels(200)
    fixed = np.array(["test"] * 50 + [""] * 150)
    split = iterative_split(labels, fixed=fixed, val_fraction=0.1, seed=0)
    assert (split[:50] == "test").all() and not (split[50:] == "test").any()
    assert (split == "val").sum() == 15


def _write_mimic(root, rows):
    records = []
    for i, (subject, study, values) in enumerate(rows):
        dicom = f"d{i:04d}"
        path = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 24), 10 * i, dtype=np.uint8)).save(path)
        records.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, **values})
    frame = pd.DataFrame(records).reindex(columns=["dicom_id", "subject_id", "study_id", *LTML_CLASSES])
    frame.to_csv(root / "LTML_MIMIC_CXR_label_.csv", index=False)
    return frame


def test_ltml_mimic_layout_maps_uncertain_to_negative(tmp_path):
    _write_mimic(
        tmp_path,
        [
            (10000032, 50414267, {"Atelectasis": 1, "Edema": -1, "Hemothorax": 1}),
            (10000032, 50414268, {"Atelectasis": 0, "Pneumomediastinum": 1}),
            (11000011, 51000001, {}),
        ],
    )
    table = load_ltml_mimic(tmp_path)
    assert table.class_names == list(LTML_CLASSES) and len(LTML_CLASSES) == 39
    assert table.paths[0] == tmp_path / "files/p10/p10000032/s50414267/d0000.jpg"
    positives = [[LTML_CLASSES[c] for c in np.flatnonzero(row)] for row in table.labels]
    assert positives == [["Atelectasis", "Hemothorax"], ["Pneumomediastinum"], []]
    assert table.patients.tolist() == [10000032, 10000032, 11000011] and table.split is None
    (tmp_path / "test.txt").write_text("d0002\n")
    (tmp_path / "val.txt").write_text("d0001\n")
    assert load_ltml_mimic(tmp_path).split.tolist() == ["train", "val", "test"]


def test_ltml_mimic_bad_inputs(tmp_path):
    with pytest.raises(MedzooDataError, match=r"LTML_MIMIC_CXR_label_\.csv: found no such file"):
        load_ltml_mimic(tmp_path)
    frame = _write_mimic(tmp_path, [(10000032, 50414267, {"Atelectasis": 2})])
    with pytest.raises(MedzooDataError, match=r"label values \[2.0\]"):
        load_ltml_mimic(tmp_path)
    frame.drop(columns=["Hemothorax"]).fillna(0).to_csv(tmp_path / "LTML_MIMIC_CXR_label_.csv", index=False)
    with pytest.raises(MedzooDataError, match="Hemothorax"):
        load_ltml_mimic(tmp_path)
    frame.fillna(0).assign(Atelectasis=1).to_csv(tmp_path / "LTML_MIMIC_CXR_label_.csv", index=False)
    (tmp_path / "files").rename(tmp_path / "elsewhere")
    with pytest.raises(MedzooDataError, match="1 of 1 listed images missing"):
        load_ltml_mimic(tmp_path)


def test_class_aware_sampler_balances_classes_and_repeats_per_epoch():
    labels = np.zeros((100, 3), dtype=np.float32)
    labels[:90, 0] = 1
    labels[90:99, 1] = 1
    labels[99, 2] = 1  # one image of the rarest class
    sampler = ClassAwareSampler(labels, num_samples=3000, seed=0)
    draws = np.array(list(sampler))
    assert abs((draws == 99).mean() - 1 / 3) < 0.03  # a third of the draws, against 1 % when shuffling
    assert abs((draws >= 90).mean() - 2 / 3) < 0.03
    again = np.array(list(sampler))
    sampler.set_epoch(1)
    assert (again == draws).all() and not (np.array(list(sampler)) == draws).all()


def test_datamodule_on_generated_demo(tmp_path):
    dm = LTMLDataModule(
        root=str(tmp_path / "demo"), layout="nih", split_level="patient", image_size=32, batch_size=4,
        synthetic={"n_images": 40, "size": [48, 48], "min_positives_per_class": 3},
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    sizes = {name: len(ds) for name, ds in dm.datasets.items()}
    assert sum(sizes.values()) == 40 and min(sizes.values()) > 0
    official_test = set((tmp_path / "demo" / "test_list.txt").read_text().split())
    assert {p.name for p in dm.datasets["test"].paths} == official_test
    assert dm.class_counts.tolist() == dm.datasets["train"].labels.sum(axis=0).tolist()
    assert dm.num_train == sizes["train"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4, 14)
    item = dm.datasets["val"][0]
    assert item["index"] == 0 and set(item) == {"image", "labels", "index", "path"}


def test_datamodule_bad_settings(tmp_path):
    with pytest.raises(MedzooDataError, match="one of ltml_mimic, nih"):
        LTMLDataModule(layout="chexpert")
    with pytest.raises(MedzooDataError, match="'image' or 'patient'"):
        LTMLDataModule(split_level="study")
    with pytest.raises(MedzooDataError, match="no such folder"):
        LTMLDataModule(root=str(tmp_path / "absent"), layout="nih").setup("fit")


def test_ltml_mimic_path_column_and_split_column(tmp_path):
    frame = _write_mimic(tmp_path, [(10000032, 50414267, {"Atelectasis": 1}), (11000011, 51000001, {})])
    frame["image_path"] = [
        "files/p10/p10000032/s50414267/d0000.jpg",
        "files/p11/p11000011/s51000001/d0001.jpg",
    ]
    frame["split"] = ["validate", "test"]
    frame.drop(columns=["dicom_id", "subject_id", "study_id"]).to_csv(tmp_path / "labels.csv", index=False)
    table = load_ltml_mimic(tmp_path, labels_csv="labels.csv", path_column="image_path")
    assert table.paths[1] == tmp_path / "files/p11/p11000011/s51000001/d0001.jpg"
    assert table.split.tolist() == ["val", "test"] and table.patients is None


def test_class_aware_training_loader(tmp_path):
    dm = LTMLDataModule(
        root=str(tmp_path / "demo"), layout="nih", image_size=32, batch_size=4, class_aware=True,
        synthetic={"n_images": 30, "size": [48, 48], "min_positives_per_class": 2},
    )  # fmt: skip
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ClassAwareSampler) and len(loader.sampler) == len(dm.datasets["train"])
    assert next(iter(loader))["labels"].shape == (4, 14)
