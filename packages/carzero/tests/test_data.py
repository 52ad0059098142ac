"""Data: sentence rules, transforms, the paired training set, the DataModule and the five test-set layouts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from carzero.data import (
    NORMALIZE_MEAN,
    NORMALIZE_STD,
    CARZeroDataModule,
    ReportPairDataset,
    ResizeLongSideAndPad,
    batch_size_for_epoch,
    build_transform,
    read_cxr,
    split_sentences,
)
from carzero.testsets import (
    CHESTXDET10_CLASSES,
    CHEXPERT_COMPETITION_CLASSES,
    TEST_SETS,
    load_chestxdet10,
    load_chestxray14,
    load_chexpert,
    load_openi,
    load_padchest,
    load_test_set,
    parse_padchest_labels,
)
from medzoo.errors import MedzooDataError
from medzoo.io import write_png


def grey_png(path, value=128, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.full(size, value, dtype=np.uint8))
    return path


def test_split_sentences_follows_the_reference_rules():
    report = "1. Small LEFT pleural effusion.2. No pneumothorax.\nStable. Heart size is normal"
    assert split_sentences(report) == [
        "small left pleural effusion",
        "no pneumothorax",
        "heart size is normal",
    ]  # "Stable" (one word) is dropped; numbering and newlines split
    assert split_sentences("") == [] and split_sentences(float("nan")) == []
    assert split_sentences("Lungs: clear, café-au-lait.") == ["lungs clear caf au lait"]


def test_resize_long_side_and_pad_known_answer():
    image = Image.fromarray(np.full((50, 100), 200, dtype=np.uint8))  # W=100, H=50
    out = np.asarray(ResizeLongSideAndPad(256)(image))
    assert out.shape == (256, 256)
    assert (out[64:192] == 200).all()  # 128 rows of content, centred
    assert (out[:64] == 0).all() and (out[192:] == 0).all()


def test_transforms_normalise_and_crop():
    image = Image.fromarray(np.full((300, 300), 255, dtype=np.uint8)).convert("RGB")
    test = build_transform(False, resize=256, crop=224)(image)
    assert test.shape == (3, 224, 224)
    assert torch.allclose(test, torch.full_like(test, (1.0 - NORMALIZE_MEAN) / NORMALIZE_STD), atol=1e-5)
    torch.manual_seed(0)
    train = build_transform(True, resize=256, crop=224)(image)
    assert train.shape == (3, 224, 224) and train.min() < test.min()  # affine fill / padding show up


def test_read_cxr_scales_16_bit_and_rejects_missing(tmp_path):
    array = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    write_png(tmp_path / "a.png", array)
    image = np.asarray(read_cxr(tmp_path / "a.png"))
    assert image.shape == (2, 2, 3) and image[0, 0, 0] == 0 and image[1, 1, 0] == 255
    assert image[0, 1, 0] == round(1000 / 4000 * 255)
    with pytest.raises(MedzooDataError, match="no such file"):
        read_cxr(tmp_path / "missing.png")


def test_report_pairs_draw_one_sentence_per_item_deterministically(tmp_path):
    path = grey_png(tmp_path / "a.png")
    texts = [["Small effusion. No pneumothorax.", "there is small effusion. heart is normal."]]
    dataset = ReportPairDataset([path], texts, build_transform(False, 40, 32), seed=3)
    pool = {"small effusion", "no pneumothorax", "there is small effusion", "heart is normal"}
    assert set(dataset.sentences[0]) == pool
    drawn = []
    for epoch in range(40):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert item["text"] in pool and item["image"].shape == (3, 32, 32)
        assert dataset[0]["text"] == item["text"]  # same (seed, epoch, index) -> same sentence
        drawn.append(item["text"])
    assert set(drawn) == pool  # every sentence gets drawn over epochs


def test_empty_report_is_a_clear_error(tmp_path):
    path = grey_png(tmp_path / "a.png")
    with pytest.raises(MedzooDataError, match=r"row 0.*empty report"):
        ReportPairDataset([path], [["Stable."]], build_transform(False, 40, 32))


def write_training_csv(root, missing=False):
    rows = []
    for i, (split, view) in enumerate(
        [("train", "PA"), ("train", "AP"), ("train", "LATERAL"), ("validate", "PA"), ("validate", "PA")]
    ):
        name = f"images/{i}.png"
        if not (missing and i == 1):
            grey_png(root / name, value=40 * i)
        rows.append({"image": name, "split": split, "view": view, "report": f"finding {i} seen. all good.",
                     "Effusion": i % 2})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "reports.csv", index=False)


def test_datamodule_keeps_frontal_views_only_and_reads_validate_as_val(tmp_path):
    write_training_csv(tmp_path)
    module = CARZeroDataModule(root=str(tmp_path), class_names=["Effusion"], batch_size=2, resize=40, crop=32)
    module.setup("fit")
    train = module.datasets["train"]
    assert [p.name for p in train.image_paths] == ["0.png", "1.png"]  # the LATERAL image is dropped
    assert len(module.datasets["val"]) == 2  # the CSV says "validate"
    labels = module.datasets["val_labels"]
    assert labels.labels.tolist() == [[1.0], [0.0]]
    assert [item["index"] for item in labels] == [0, 1]  # evaluation samples carry their index
    # "val" in the CSV is the same split; an unknown name is an error naming the column.
    table = pd.read_csv(tmp_path / "reports.csv")
    table["split"] = table["split"].replace("validate", "val")
    table.to_csv(tmp_path / "reports.csv", index=False)
    module = CARZeroDataModule(root=str(tmp_path), class_names=["Effusion"], resize=40, crop=32)
    module.setup("fit")
    assert len(module.datasets["val"]) == 2
    table.loc[0, "split"] = "dev"
    table.to_csv(tmp_path / "reports.csv", index=False)
    with pytest.raises(MedzooDataError, match=r"column split.*\['dev'\]"):
        CARZeroDataModule(root=str(tmp_path), resize=40, crop=32).setup("fit")


def test_datamodule_root_none_is_the_demo_set_and_a_missing_root_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    module = CARZeroDataModule(synthetic_images=12, synthetic_size=(32, 32), resize=40, crop=32, seed=3)
    assert module.dataset_root() == tmp_path / "cache" / "carzero" / "cxr-n12-32x32-seed3"
    module.prepare_data()
    table = pd.read_csv(module.dataset_root() / "reports.csv")
    assert len(table) == 12 and (module.dataset_root() / "test_list.txt").is_file()
    assert module.cache_dir is None  # cache_dir is a preprocessing cache only, never the demo folder
    with pytest.raises(MedzooDataError, match="no such folder"):
        CARZeroDataModule(root=str(tmp_path / "absent")).dataset_root()


def test_predict_inputs_file_or_folder(tmp_path):
    grey_png(tmp_path / "in" / "a.png")
    grey_png(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    module = CARZeroDataModule(predict_root=str(tmp_path / "in"), batch_size=4, resize=40, crop=32)
    batch = next(iter(module.predict_dataloader()))
    assert batch["name"] == ["a.png", "sub/b.png"] and batch["index"].tolist() == [0, 1]
    assert batch["image"].shape == (2, 3, 32, 32)
    single = CARZeroDataModule(predict_root=str(tmp_path / "in" / "sub" / "b.png"), resize=40, crop=32)
    assert next(iter(single.predict_dataloader()))["name"] == ["b.png"]
    with pytest.raises(MedzooDataError, match="predict_root"):
        CARZeroDataModule().predict_dataloader()


def test_preprocessing_cache_gives_the_same_tensors(tmp_path):
    write_training_csv(tmp_path / "data")
    grey_png(tmp_path / "data" / "images" / "0.png", size=(50, 30))  # not square: padded
    plain = CARZeroDataModule(root=str(tmp_path / "data"), class_names=["Effusion"], resize=40, crop=32)
    cached = CARZeroDataModule(root=str(tmp_path / "data"), class_names=["Effusion"], resize=40, crop=32,
                               cache_dir=str(tmp_path / "cache"))  # fmt: skip
    plain.setup("fit")
    cached.setup("fit")
    for _ in range(2):  # the second pass reads the cache files
        for index in range(2):
            expected = plain.datasets["val_labels"][index]["image"]
            torch.testing.assert_close(
                cached.datasets["val_labels"][index]["image"], expected, rtol=0, atol=0
            )
    files = sorted((tmp_path / "cache" / "resized-40").glob("*.png"))
    assert len(files) == 2 and np.asarray(Image.open(files[0])).shape == (40, 40)
    assert not (tmp_path / "data" / "resized-40").exists()  # the data folder stays untouched


def test_datamodule_reports_missing_images(tmp_path):
    write_training_csv(tmp_path, missing=True)
    module = CARZeroDataModule(root=str(tmp_path), resize=40, crop=32)
    with pytest.raises(MedzooDataError, match=r"missing on disk, first .*1\.png"):
        module.setup("fit")


def test_batch_size_schedule_of_the_paper():
    schedule = {0: 64, 2: 128, 6: 256}
    assert [batch_size_for_epoch(schedule, e) for e in (0, 1, 2, 5, 6, 14)] == [64, 64, 128, 128, 256, 256]
    with pytest.raises(MedzooDataError):
        batch_size_for_epoch({2: 128}, 0)


# --------------------------------------------------------------------------- the five test-set layouts


def test_chestxray14_layout(tmp_path):
    table = pd.DataFrame(
        {
            "Image Index": ["a.png", "b.png", "c.png"],
            "Finding Labels": ["Effusion|Mass", "No Finding", "Hernia"],
            "Patient ID": [1, 2, 3],
        }
    )
    table.to_csv(tmp_path / "Data_Entry_2017_v2020.csv", index=False)
    (tmp_path / "test_list.txt").write_text("a.png\nc.png\n")
    grey_png(tmp_path / "images_001" / "images" / "a.png")
    grey_png(tmp_path / "images_012" / "images" / "c.png")
    test = load_chestxray14(tmp_path)
    assert [p.name for p in test.image_paths] == ["a.png", "c.png"]
    assert test.labels.shape == (2, 14)
    names = test.class_names
    assert test.labels[0, names.index("Effusion")] == 1 and test.labels[0, names.index("Mass")] == 1
    assert test.labels[0].sum() == 2 and test.labels[1, names.index("Hernia")] == 1
    assert load_chestxray14(tmp_path, split="all", check_images=False).labels.shape == (3, 14)


def test_chexpert_layout(tmp_path):
    rows = [
        {"Path": "CheXpert-v1.0/test/patient1/study1/view1_frontal.jpg", "Atelectasis": 1, "Cardiomegaly": 0,
         "Consolidation": 0, "Edema": 1, "Pleural Effusion": 0, "No Finding": 0},
        {"Path": "test/patient2/study1/view1_frontal.jpg", "Atelectasis": 0, "Cardiomegaly": 1,
         "Consolidation": 0, "Edema": 0, "Pleural Effusion": 1, "No Finding": 0},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "test_labels.csv", index=False)
    for patient in (1, 2):
        grey_png(tmp_path / "test" / f"patient{patient}" / "study1" / "view1_frontal.jpg")
    test = load_chexpert(tmp_path)
    assert test.class_names == list(CHEXPERT_COMPETITION_CLASSES)
    assert test.labels.tolist() == [[1, 0, 0, 1, 0], [0, 1, 0, 0, 1]]
    assert all(p.is_file() for p in test.image_paths)


def test_padchest_layout(tmp_path):
    rows = [
        {"ImageID": "x1.png", "ImageDir": 0, "Labels": "['pleural effusion', ' cardiomegaly']",
         "MethodLabel": "Physician", "Projection": "PA"},
        {"ImageID": "x2.png", "ImageDir": 0, "Labels": "['normal']", "MethodLabel": "Physician",
         "Projection": "AP_horizontal"},
        {"ImageID": "x3.png", "ImageDir": 1, "Labels": "['pneumonia']", "MethodLabel": "RNN_model",
         "Projection": "PA"},
        {"ImageID": "x4.png", "ImageDir": 1, "Labels": "['nodule']", "MethodLabel": "Physician",
         "Projection": "L"},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", index=False)
    grey_png(tmp_path / "0" / "x1.png")
    grey_png(tmp_path / "images" / "x2.png")
    test = load_padchest(tmp_path)
    assert test.class_names == ["cardiomegaly", "pleural effusion"]  # physician-labelled frontal only
    assert test.labels.tolist() == [[1, 1], [0, 0]]
    assert [p.name for p in test.image_paths] == ["x1.png", "x2.png"]
    assert parse_padchest_labels("[]") == [] and parse_padchest_labels(np.nan) == []


def test_openi_layout(tmp_path):
    reports = tmp_path / "ecgen-radiology"
    reports.mkdir()
    (reports / "1.xml").write_text(
        "<eCitation><MeSH><major>Cardiomegaly/mild</major><major>Pleural Effusion/left</major></MeSH>"
        '<parentImage id="CXR1_1_IM-0001-3001"/><parentImage id="CXR1_1_IM-0001-4001"/></eCitation>'
    )
    (reports / "2.xml").write_text(
        '<eCitation><MeSH><major>normal</major></MeSH><parentImage id="CXR2_1_IM-0652-1001"/></eCitation>'
    )
    for name in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_1_IM-0652-1001"):
        grey_png(tmp_path / "NLMCXR_png" / f"{name}.png")
    test = load_openi(
        tmp_path, labels="mesh_major", class_names=["Cardiomegaly", "Pleural Effusion", "Nodule"]
    )
    assert test.labels.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    (reports / "3.xml").write_text("<eCitation><unclosed>")
    with pytest.raises(MedzooDataError, match="invalid XML"):
        load_openi(tmp_path, labels="mesh_major")


def test_chestxdet10_layout(tmp_path):
    records = [
        {"file_name": "36199.png", "syms": ["Nodule", "Effusion"], "boxes": [[1, 2, 3, 4], [5, 6, 7, 8]]},
        {"file_name": "36200.png", "syms": [], "boxes": []},
    ]
    (tmp_path / "test.json").write_text(json.dumps(records))
    for record in records:
        grey_png(tmp_path / "test_data" / record["file_name"])
    test = load_chestxdet10(tmp_path)
    assert test.class_names == list(CHESTXDET10_CLASSES)
    expected = np.zeros((2, 10))
    expected[0, [CHESTXDET10_CLASSES.index("Nodule"), CHESTXDET10_CLASSES.index("Effusion")]] = 1
    np.testing.assert_array_equal(test.labels, expected)
    assert test.positives().sum() == 2


def test_unknown_dataset_and_missing_layout_files(tmp_path):
    assert sorted(TEST_SETS) == ["chestxdet10", "chestxray14", "chexpert", "openi", "padchest"]
    with pytest.raises(MedzooDataError, match="expected one of"):
        load_test_set("mimic-cxr", tmp_path)
    with pytest.raises(MedzooDataError, match=r"options \['split'\].*json_name"):
        load_test_set("chestxdet10", tmp_path, split="all")
    with pytest.raises(MedzooDataError, match="Data_Entry_2017"):
        load_test_set("chestxray14", tmp_path)
    with pytest.raises(MedzooDataError, match=r"test\.json"):
        load_test_set("chestxdet10", tmp_path)


def test_datamodule_aligns_reports_on_the_fly(tmp_path):
    from carzero.alignment import rule_based_align

    write_training_csv(tmp_path)
    table = pd.read_csv(tmp_path / "reports.csv")
    table.loc[0, "report"] = "Small left pleural effusion. No pneumothorax."
    table.to_csv(tmp_path / "reports.csv", index=False)
    module = CARZeroDataModule(root=str(tmp_path), text_columns=["report", "aligned_report"],
                               align_reports=True, resize=40, crop=32)  # fmt: skip
    module.setup("fit")
    pool = module.datasets["train"].sentences[0]
    assert (
        rule_based_align(table.loc[0, "report"])
        == "there is small left pleural effusion. there is no pneumothorax."
    )
    assert pool == ["small left pleural effusion", "no pneumothorax",
                    "there is small left pleural effusion", "there is no pneumothorax"]  # fmt: skip
    # Without the option the column must exist in the CSV.
    with pytest.raises(MedzooDataError, match="aligned_report"):
        CARZeroDataModule(root=str(tmp_path), text_columns=["report", "aligned_report"]).setup("fit")


def test_findings_first_draws_only_sentences_that_state_a_finding(tmp_path):
    from carzero.alignment import states_a_finding

    assert states_a_finding("there is left pleural effusion")
    assert not states_a_finding("there is no pneumothorax") and not states_a_finding("heart size is normal")
    image = tmp_path / "a.png"
    write_png(image, np.full((8, 8), 100, dtype=np.uint8))
    texts = [
        ["Small left effusion. No pneumothorax. Heart size is normal."],
        ["No acute findings. Lungs clear."],
    ]
    pairs = ReportPairDataset([image, image], texts, build_transform(False, 8, 8), findings_first=True)
    drawn = set()
    for epoch in range(12):
        pairs.set_epoch(epoch)
        drawn.add((pairs[0]["text"], pairs[1]["text"]))
    assert {first for first, _ in drawn} == {"small left effusion"}
    # an image without a positive sentence keeps all of its sentences
    assert {second for _, second in drawn} == {"no acute findings", "lungs clear"}
    plain = ReportPairDataset([image], texts[:1], build_transform(False, 8, 8))
    assert len(plain.sentences[0]) == 3


def test_augment_false_trains_on_the_test_transform(tmp_path):
    write_training_csv(tmp_path)
    plain = CARZeroDataModule(root=str(tmp_path), resize=40, crop=32, augment=False)
    plain.setup("fit")
    torch.manual_seed(0)
    first = plain.datasets["train"][0]["image"]
    torch.manual_seed(1)
    assert torch.equal(plain.datasets["train"][0]["image"], first)  # no random augmentation
    expected = build_transform(False, 40, 32)(read_cxr(plain.datasets["train"].image_paths[0]))
    assert torch.equal(first, expected)
    augmented = CARZeroDataModule(root=str(tmp_path), resize=40, crop=32)
    augmented.setup("fit")
    assert "RandomAffine" in repr(augmented.datasets["train"].transform)  # the paper's augmentation
    assert "RandomAffine" not in repr(plain.datasets["train"].transform)
