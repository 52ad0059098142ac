"""Loaders on the official layouts (hand-made tables, the synthetic NIH layout, real NIH files) and the
pre-training items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecamp.data import (
    CHESTXRAY14_CLASSES,
    DEMO_SETTINGS,
    ECAMPDataModule,
    demo_folder_name,
    load_chestxray14,
    load_chexpert,
    load_covidx,
    load_medzoo_labels,
    load_rsna_pneumonia,
    load_siim,
    read_cxr,
    rle_decode_siim,
    write_demo_pretraining_set,
)
from medzoo.errors import MedzooDataError


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return write_demo_pretraining_set(tmp_path_factory.mktemp("cxr"), n_images=24, size=128, seed=0)


def test_chestxray14_layout_agrees_with_the_mimic_like_table(demo_root):
    nih = load_chestxray14(demo_root, seed=0)
    medzoo = load_medzoo_labels(demo_root, seed=0)
    by_name = {}
    for split in ("train", "val", "test"):
        for path, labels in zip(medzoo.paths[split], medzoo.labels[split], strict=True):
            by_name[path.name] = labels
    for split in ("train", "val", "test"):
        for path, labels in zip(nih.paths[split], nih.labels[split], strict=True):
            np.testing.assert_array_equal(labels, by_name[path.name])
    test_names = {p.name for p in nih.paths["test"]}
    assert test_names == {p.name for p in medzoo.paths["test"]}  # the official test list = the test split
    assert len(nih.paths["train"]) + len(nih.paths["val"]) + len(test_names) == 24


def test_siim_rle_known_answer():
    # 3x3 image, column-major numbering: pixels 1-2 (rows 1-2 of column 0), then a gap of 3 -> pixel 6.
    mask = rle_decode_siim("1 2 3 1", 3, 3)
    np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 0, 0], [1, 0, 0]])
    assert rle_decode_siim("-1", 3, 3).sum() == 0


def test_siim_rsna_covidx_chexpert_tables(tmp_path):
    siim = tmp_path / "siim"
    (siim / "dicom-images-train" / "a" / "b").mkdir(parents=True)
    for name in ("img1", "img2", "img3"):
        (siim / "dicom-images-train" / "a" / "b" / f"{name}.dcm").write_bytes(b"")
    pd.DataFrame(
        {"ImageId": ["img1", "img1", "img2", "img3"], " EncodedPixels": ["1 2", "5 1", "-1", "-1"]}
    ).to_csv(siim / "train-rle.csv", index=False)
    masks = load_siim(siim, seed=0)
    specs = {
        p.stem: m
        for s in ("train", "val", "test")
        for p, m in zip(masks.paths[s], masks.masks[s], strict=True)
    }
    assert specs["img1"] == ("rle", ["1 2", "5 1"])

    rsna = tmp_path / "rsna"
    rsna.mkdir()
    pd.DataFrame(
        {
            "patientId": ["p1", "p1", "p2", "p3"],
            "x": [1, 5, None, None],
            "y": [1, 5, None, None],
            "width": [2, 2, None, None],
            "height": [2, 2, None, None],
            "Target": [1, 1, 0, 0],
        }
    ).to_csv(rsna / "stage_2_train_labels.csv", index=False)
    labels = load_rsna_pneumonia(rsna, seed=0)
    flat = {
        p.stem: float(v[0])
        for s in ("train", "val", "test")
        for p, v in zip(labels.paths[s], labels.labels[s], strict=True)
    }
    assert flat == {"p1": 1.0, "p2": 0.0, "p3": 0.0}

    covid = tmp_path / "covidx"
    covid.mkdir()
    (covid / "train.txt").write_text("1 a.png positive src\n2 b.png negative src\n3 c.png negative src\n")
    (covid / "test.txt").write_text("4 d.png positive src\n")
    data = load_covidx(covid, seed=0)
    assert data.class_names == ["negative", "positive"] and data.labels["test"].tolist() == [[0.0, 1.0]]
    (covid / "test.txt").write_text("4 d.png\n")
    with pytest.raises(MedzooDataError, match=r"test\.txt"):
        load_covidx(covid, seed=0)

    chexpert = tmp_path / "CheXpert-v1.0-small"
    chexpert.mkdir()
    columns = {"Atelectasis": [1, -1], "Cardiomegaly": [0, None], "Consolidation": [None, 1],
               "Edema": [0, 0], "Pleural Effusion": [1, 0]}  # fmt: skip
    for name in ("train.csv", "valid.csv"):
        pd.DataFrame(
            {"Path": ["CheXpert-v1.0-small/train/p1.jpg", "CheXpert-v1.0-small/train/p2.jpg"], **columns}
        ).to_csv(chexpert / name, index=False)
    data = load_chexpert(chexpert, seed=0)
    np.testing.assert_array_equal(data.labels["test"], [[1, 0, 0, 0, 1], [1, 0, 1, 0, 0]])  # -1 -> 1 (U-Ones)
    assert data.paths["test"][0] == tmp_path / "CheXpert-v1.0-small/train/p1.jpg"


def test_pretraining_items_are_consistent(demo_root):
    module = ECAMPDataModule(root=demo_root, image_size=128, max_length=48, vocab_size=500, batch_size=4)
    module.setup("fit")
    item = module.datasets["train"][0]
    assert item["image"].shape == (3, 128, 128)
    ids, masked_ids, masked = item["labels"], item["input_ids"], item["masked"]
    mask_id = module.tokenizer.token_to_id("[MASK]")
    assert torch.equal(masked_ids[masked], torch.full_like(masked_ids[masked], mask_id))
    assert torch.equal(masked_ids[~masked], ids[~masked])
    assert item["weights"].sum().item() == pytest.approx(48.0, rel=1e-5)
    # Validation items are deterministic; training items change with the epoch.
    val = module.datasets["val"]
    assert torch.equal(val[0]["input_ids"], val[0]["input_ids"])
    train = module.datasets["train"]
    first = train[1]["input_ids"]
    train.set_epoch(1)
    assert not torch.equal(first, train[1]["input_ids"])
    # The tokenizer is saved once and loaded by the next run.
    assert (demo_root / "ecamp_wordpiece.json").is_file()
    again = ECAMPDataModule(root=demo_root, image_size=128, max_length=48, vocab_size=500)
    again.setup("fit")
    assert again.tokenizer.get_vocab() == module.tokenizer.get_vocab()


def test_real_nih_images_and_labels(shared_data, tmp_path):
    nih = shared_data / "cxr-nih"
    images = sorted((nih / "images").glob("*.png"))
    image = read_cxr(images[0])
    assert image.mode == "L" and min(image.size) >= 448  # real CXRs are large enough for the 448 SR target
    root = tmp_path / "nih"
    root.mkdir()
    (root / "images").symlink_to(nih / "images")
    (root / "metadata").symlink_to(nih / "metadata")
    (root / "train_val_list.txt").write_text(images[0].name + "\n")
    (root / "test_list.txt").write_text(images[1].name + "\n")
    data = load_chestxray14(root, seed=0)
    table = pd.read_csv(next((nih / "metadata").glob("Data_Entry_2017*.csv.gz")))
    expected = table.set_index("Image Index").loc[images[1].name, "Finding Labels"].split("|")
    positives = [c for c, v in zip(data.class_names, data.labels["test"][0], strict=True) if v]
    assert positives == [c for c in data.class_names if c in expected]
    assert data.paths["test"] == [root / "images" / images[1].name]


def test_the_demo_text_length_holds_every_report_with_its_context(demo_root):
    """At the demo's token length no generated report loses its end (the impression) to truncation after the
    entity context is inserted (at 64 tokens 38 % of the training texts did)."""
    import importlib.resources

    import yaml

    config = yaml.safe_load((importlib.resources.files("ecamp") / "configs" / "demo.yaml").read_text())
    max_length = config["data"]["max_length"]
    assert config["model"]["overrides"]["max_length"] == max_length  # the BERT has a position for every token
    module = ECAMPDataModule(root=demo_root, image_size=128, max_length=max_length, vocab_size=500)
    module.setup("fit")
    train = module.datasets["train"]
    tokenizer = module.tokenizer
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lengths = [
        len(tokenizer.encode(train.text(i, np.random.default_rng([0, epoch, i]))).ids)
        for epoch in range(5)
        for i in range(len(train))
    ]
    assert max(lengths) > 64  # the case the demo's old 64 tokens cut
    assert max(lengths) <= max_length


def _config(name: str) -> dict:
    import importlib.resources

    import yaml

    return yaml.safe_load((importlib.resources.files("ecamp") / "configs" / f"{name}.yaml").read_text())


def test_generator_options_name_their_own_demo_folder():
    base = {"n_images": 200, "size": 160, "seed": 0}
    assert demo_folder_name("demo", base) == "demo-n200-s160-seed0"  # the cache of 0.2 stays valid
    defaults = {**base, "finding_contrast": 1.0, "report_style": "default"}
    assert demo_folder_name("demo", defaults) == "demo-n200-s160-seed0"
    subtle = {**base, "finding_contrast": 0.3, "report_style": "entity_only"}
    assert demo_folder_name("demo", subtle) == "demo-n200-s160-seed0-contrast0.3-entity_only"


def test_the_shipped_demos_read_one_set_in_the_0_2_folder():
    """demo and finetune_demo read the set of the default generator options, in the folder of 0.2 that the
    demo and smoke commands of pyproject.toml name."""
    import re

    pretraining = {**DEMO_SETTINGS, **(_config("demo")["data"].get("synthetic") or {})}
    probe = {**DEMO_SETTINGS, **(_config("finetune_demo")["data"].get("synthetic") or {})}
    assert demo_folder_name("demo", pretraining) == demo_folder_name("demo", probe) == "demo-n200-s160-seed0"
    commands = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    folders = set(re.findall(r"\{cache\}/ecamp/([^/\"]+)/", commands))
    assert folders == {"demo-n200-s160-seed0"}


def test_entity_only_texts_tell_the_masked_entity_only_through_the_image(tmp_path):
    """The opt-in entity_only reports without inserted context (`--data.synthetic '{"report_style":
    "entity_only"}' --data.context_probability 0`): every finding is one entity token, and two texts with the
    same number of findings are the same ids once the entity tokens are removed, so a masked entity cannot be
    recovered from the rest of the text. The demo set's labels and reports at a smaller image size, the demo's
    text sizes (the tokenizer needs the demo's word counts: a word seen once is split into pieces)."""
    data = _config("demo")["data"]
    settings = {**DEMO_SETTINGS, "report_style": "entity_only", "size": 64}
    root = write_demo_pretraining_set(tmp_path, **settings)
    sizes = {k: data[k] for k in ("max_length", "vocab_size")}
    module = ECAMPDataModule(root=root, image_size=128, context_probability=0.0, **sizes)
    module.setup("fit")
    labels = pd.read_csv(root / "reports.csv").set_index("image")
    frames: dict[int, set[tuple[int, ...]]] = {}
    for split in ("train", "val", "test"):
        dataset = module.datasets[split]
        for i in range(len(dataset)):
            row = dataset.table.iloc[i]
            text = dataset.text(i, np.random.default_rng(i))
            assert text == row["report"]  # no context inserted
            report = dataset.masker(text, np.random.default_rng(i))
            positives = int(labels.loc[str(Path(row["image"]).relative_to(root)), CHESTXRAY14_CLASSES].sum())
            assert sum(report.entity) == positives, text
            frame = tuple(t for t, e in zip(report.ids, report.entity, strict=True) if not e)
            frames.setdefault(positives, set()).add(frame)
    assert max(frames) >= 2 and all(len(frame) == 1 for frame in frames.values())


def test_the_data_modules_pass_generator_options_to_their_own_set(tmp_path, monkeypatch):
    """`--data.synthetic` options reach the generator through both data modules, which read one set in the
    option's own folder; the default set is another folder with other reports."""
    from ecamp.data import FinetuneDataModule

    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path))
    small = {"n_images": 12, "size": 64, "seed": 0}
    option = {**small, "report_style": "entity_only"}
    root = ECAMPDataModule(synthetic=option).data_root()
    assert root.name == "demo-n12-s64-seed0-entity_only"
    assert FinetuneDataModule(synthetic=option).data_root() == root
    default = ECAMPDataModule(synthetic=small).data_root()
    assert default.name == "demo-n12-s64-seed0"
    reports = pd.read_csv(root / "reports.csv")["report"]
    assert reports.str.contains("There is").all()
    assert not reports.equals(pd.read_csv(default / "reports.csv")["report"])
