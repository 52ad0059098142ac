"""Data: the CT-RATE and BIMCV-R layouts, the demo set, instruction building, tokenisation, transforms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ct_vlm.data import (
    IGNORE_INDEX,
    LESION_HU,
    CTCase,
    CTVLMDataModule,
    VolumeLoader,
    build_instructions,
    ct_transforms,
    format_prompt,
    make_demo_dataset,
    read_bimcv_r,
    read_ct_rate,
    read_jsonl,
    tokenize_conversations,
    write_jsonl,
)
from medzoo.errors import MedzooDataError
from medzoo.io import read_volume, write_volume


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=6, n_test=3, seed=0)


def test_demo_set_is_read_by_the_ct_rate_loader_and_the_image_shows_the_report(demo_root):
    cases = read_ct_rate(demo_root)
    assert [c.split for c in cases].count("train") == 6 and [c.split for c in cases].count("test") == 3
    assert (demo_root / "dataset/train/train_1/train_1_a/train_1_a_1.nii.gz").is_file()
    for case in cases:
        volume = read_volume(case.volume)
        lesion = volume.array >= LESION_HU - 60  # lesion voxels (organs <= 290 HU, spine 700 HU posterior)
        lesion &= volume.array <= LESION_HU + 60
        assert bool(case.labels["Lesion"]) == ("lesion is seen on the" in case.report)
        assert case.labels["Lesion"] == int(lesion.sum() > 50)
        if case.labels["Lesion"]:
            x = np.nonzero(lesion)[0].mean()
            side = "left" if x < volume.array.shape[0] / 2 else "right"  # RAS: +x is the patient's right
            assert f"on the {side} side" in case.report
            assert case.labels["Left lesion"] == (side == "left")
            assert ("large" in case.report) == bool(case.labels["Large lesion"])


def test_ct_rate_skips_missing_volumes_and_rejects_a_missing_csv(demo_root, tmp_path):
    import shutil

    copy = tmp_path / "ct-rate"
    shutil.copytree(demo_root, copy)
    shutil.rmtree(copy / "dataset/train/train_1")
    with pytest.warns(UserWarning, match="1 volumes"):
        assert len(read_ct_rate(copy / "dataset")) == 8
    (copy / "dataset/radiology_text_reports/train_reports.csv").unlink()
    with pytest.raises(MedzooDataError, match=r"train_reports.csv"):
        read_ct_rate(copy)


def test_bimcv_r_manifests(tmp_path):
    entries = [{"image": "a.nii.gz", "text": "Normal chest."},
               {"image": "b.nii.gz", "text": "Nodule.", "split": "test"}]  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(entries))
    cases = read_bimcv_r(tmp_path)
    assert [c.split for c in cases] == ["train", "test"] and cases[1].report == "Nodule."
    (tmp_path / "dataset.json").write_text(json.dumps([{"image": "a.nii.gz"}]))
    with pytest.raises(MedzooDataError, match=r"dataset.json"):
        read_bimcv_r(tmp_path)
    (tmp_path / "dataset.json").unlink()
    pd.DataFrame({"volume": ["a.nii.gz"], "report": ["x"], "Nodule": [1]}).to_csv(
        tmp_path / "reports.csv", index=False
    )
    assert read_bimcv_r(tmp_path)[0].labels == {"Nodule": 1}


def test_instruction_builder_and_jsonl_round_trip(tmp_path):
    cases = [CTCase("a.nii.gz", "A lesion.", {"Lesion": 1, "Large lesion": 0}),
             CTCase("b.nii.gz", "Normal.", {"Lesion": 0, "Large lesion": 0})]  # fmt: skip
    samples = build_instructions(cases)
    assert len(samples) == 2 * (1 + 2 + 1)
    closed = [s for s in samples if s["task"] == "closed_vqa"]
    expected = [("Is there evidence of lesion?", "yes", 1), ("Is there evidence of large lesion?", "no", 0)]
    assert [(s["question"], s["answer"], s["target"]) for s in closed[:2]] == expected
    opened = [s["answer"] for s in samples if s["task"] == "open_vqa"]
    assert opened == ["lesion", "none"]
    assert read_jsonl(write_jsonl(tmp_path / "i.jsonl", samples)) == samples
    with pytest.raises(MedzooDataError, match="empty report"):
        build_instructions([CTCase("c.nii.gz", "  ", {})], tasks=["report"])
    with pytest.raises(MedzooDataError, match="tasks"):
        build_instructions(cases, tasks=["captioning"])
    (tmp_path / "bad.jsonl").write_text('{"volume": "a", "question": "q", "answer": ""}\n')
    with pytest.raises(MedzooDataError, match=r"bad.jsonl:1"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_tokenisation_masks_everything_but_the_answer(tiny_lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    prompts = [format_prompt("Is there evidence of lesion?"), format_prompt("Write the radiology report.")]
    batch = tokenize_conversations(tokenizer, prompts, ["yes", "No focal lesion is seen."], max_length=64)
    for i, (prompt, answer) in enumerate(zip(prompts, ["yes", "No focal lesion is seen."], strict=True)):
        n_prompt = len(tokenizer(prompt)["input_ids"])
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = batch["labels"][i]
        assert bool((labels[:n_prompt] == IGNORE_INDEX).all())
        assert labels[n_prompt : n_prompt + len(answer_ids)].tolist() == answer_ids
        assert bool((labels[n_prompt + len(answer_ids) :] == IGNORE_INDEX).all())
        assert batch["attention_mask"][i].sum() == n_prompt + len(answer_ids)  # right padding
    generation = tokenize_conversations(tokenizer, prompts)
    assert generation["attention_mask"][0, -1] == 1 and "labels" not in generation  # left padding
    with pytest.raises(MedzooDataError, match="non-empty answer"):
        tokenize_conversations(tokenizer, prompts[:1], [""])
    with pytest.raises(MedzooDataError, match="<image>"):
        format_prompt("q", template="Question: {question}")


def test_transforms_on_a_real_ct_and_bad_volumes(ct_data_dir, tmp_path):
    image = ct_transforms((32, 32, 16))({"image": str(ct_data_dir / "example_ct.nii.gz")})["image"]
    assert image.shape == (1, 32, 32, 16) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) < 0.1 and float(image.max()) > 0.5  # air and bone in the HU window
    write_volume(tmp_path / "flat.nii.gz", np.zeros((8, 8, 1), np.int16), np.eye(4))
    with pytest.raises(MedzooDataError, match=r"flat.nii.gz"):
        VolumeLoader(ct_transforms((32, 32, 16)))(str(tmp_path / "flat.nii.gz"))


def test_datamodule_splits_by_case_and_batches(demo_root):
    dm = CTVLMDataModule(root=str(demo_root), batch_size=4, img_size=(32, 32, 16), val_fraction=0.34)
    dm.setup("fit")
    train = {s["volume"] for s in dm.datasets["train"].samples}
    val = {s["volume"] for s in dm.datasets["val"].samples}
    test = {s["volume"] for s in dm.datasets["test"].samples}
    assert len(train) == 4 and len(val) == 2 and len(test) == 3 and not (train & val) and not (train & test)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32, 16) and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["task"][0] == "report" and batch["target"].tolist()[1:] == [
        int(s["target"]) for s in dm.datasets["val"].samples[1:4]]  # fmt: skip
    with pytest.raises(MedzooDataError, match=r"data.layout"):
        CTVLMDataModule(layout="mimic")
