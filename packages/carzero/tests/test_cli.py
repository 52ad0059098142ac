"""CLI round trips: fit on generated data, then zeroshot, evaluate and test from the checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from carzero.cli import main
from medzoo.errors import MedzooDataError

# Real data: <repo>/../shared/data (skipped with a reason when absent).
NIH = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "cxr-nih"
FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumothorax"]


def fit_args(root: Path, tiny_bert_dir: Path, epochs: int = 2) -> list[str]:
    return [
        "fit",
        "--config", "demo",
        f"--trainer.default_root_dir={root / 'run'}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--model.text_model={tiny_bert_dir}",
        "--model.vit=tiny",
        "--model.max_words=24",
        "--model.fusion_ffn_dim=64",
        "--model.fusion_heads=2",
        f"--data.cache_dir={root / 'data'}",
        "--data.synthetic={n_images: 40, size: [64, 64], seed: 0}",
        "--data.crop=32",
        "--data.resize=37",
        "--data.batch_size=4",
        "--data.batch_size_schedule={0: 4, 1: 8}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("carzero_cli")
    cli = main(fit_args(root, tiny_bert_dir))
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return root, ckpt, cli


def test_fit_on_synthetic_data_applies_the_batch_size_schedule(trained):
    _, ckpt, cli = trained
    trainer = cli.trainer
    assert trainer.current_epoch == 2
    # The schedule {0: 4, 1: 8} is applied by rebuilding the loader every epoch.
    assert trainer.train_dataloader.batch_size == 8
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"])
    assert "val/auc" in metrics and 0.0 <= float(metrics["val/auc"]) <= 1.0
    # Checkpoints are loadable with weights_only=True and hold plain hyperparameters.
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["vit"] == "tiny"
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["betas"] == (0.5, 0.999) and optimizer.defaults["weight_decay"] == 1e-6
    assert trainer.gradient_clip_val == 0.25


def test_zeroshot_on_real_nih_images_writes_one_row_per_image(trained, tmp_path):
    if not (NIH / "images").is_dir():
        pytest.skip(f"real NIH images not found at {NIH} (../shared/data is absent in this checkout)")
    _, ckpt, _ = trained
    output = tmp_path / "scores.csv"
    result = main(
        ["zeroshot", "--images", str(NIH / "images"), "--findings", ",".join(FINDINGS),
         "--ckpt", str(ckpt), "--output", str(output)]
    )  # fmt: skip
    assert Path(result) == output
    table = pd.read_csv(output)
    images = sorted(p.name for p in (NIH / "images").glob("*.png"))
    assert list(table.columns) == ["image", *FINDINGS]
    assert sorted(table["image"]) == images
    assert np.isfinite(table[FINDINGS].to_numpy()).all()
    # Scores are the model's: recomputing one image in-process gives the same numbers.
    from carzero.cli import _transform, load_module
    from carzero.data import read_cxr

    module = load_module(ckpt)
    image = _transform(module)(read_cxr(NIH / "images" / table["image"][0])).unsqueeze(0)
    expected = module.zero_shot(image, FINDINGS)[0].numpy()
    np.testing.assert_allclose(table.loc[0, FINDINGS].to_numpy(dtype=float), expected, rtol=1e-4, atol=1e-5)


def test_evaluate_chestxray14_layout_on_generated_data(trained, tmp_path):
    root, ckpt, _ = trained
    data = root / "data"  # make_cxr_dataset wrote the NIH layout too: Data_Entry_2017.csv + test_list.txt
    output = tmp_path / "eval.json"
    result = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt", str(ckpt),
                   "--output", str(output)])  # fmt: skip
    saved = json.loads(output.read_text())
    assert saved["n_images"] == len((data / "test_list.txt").read_text().split())
    assert 0.0 <= result["auc"] <= 1.0
    # The groups are computed from the test set's own positive counts.
    counts = np.array(list(saved["positives"].values()))
    head = {n for n, c in saved["positives"].items() if c > np.percentile(counts, 65)}
    assert set(saved["groups"]["head"]) == head
    assert sum(len(v) for v in saved["groups"].values()) == 14


def test_test_verb_reports_zero_shot_auc(trained, tiny_bert_dir):
    root, ckpt, _ = trained
    args = fit_args(root, tiny_bert_dir)
    args[0] = "test"
    cli = main([*args, f"--ckpt_path={ckpt}"])
    metrics = cli.trainer.callback_metrics
    assert {"test/auc", "test/auc_head", "test/auc_medium", "test/auc_tail"} <= set(metrics)


def test_evaluate_grouping_from_the_real_nih_label_table():
    table_path = NIH / "metadata" / "Data_Entry_2017_v2020.csv.gz"
    if not table_path.is_file():
        pytest.skip(f"real NIH label table not found at {table_path}")
    from carzero.data import CHESTXRAY14_CLASSES, load_chestxray14
    from carzero.module import frequency_groups

    test = load_chestxray14(NIH, split="all", check_images=False)
    assert test.labels.shape == (112120, 14)
    # Independent count with pandas string matching.
    findings = pd.read_csv(table_path)["Finding Labels"]
    counts = np.array(
        [findings.str.split("|").apply(lambda row, c=c: c in row).sum() for c in CHESTXRAY14_CLASSES]
    )
    np.testing.assert_array_equal(test.positives(), counts)
    assert counts[CHESTXRAY14_CLASSES.index("Infiltration")] == 19894  # the published NIH count
    groups = frequency_groups(test.positives())
    threshold = np.percentile(counts, 65)
    expected_head = [i for i, c in enumerate(counts) if c > threshold]
    assert groups["head"].tolist() == expected_head
    assert {CHESTXRAY14_CLASSES[i] for i in groups["head"]} >= {"Infiltration", "Effusion", "Atelectasis"}
    assert groups["tail"].size == 0  # every NIH class has far more than 10 positives
    assert sorted(np.concatenate(list(groups.values())).tolist()) == list(range(14))


def test_bad_inputs_give_clear_errors(trained, tmp_path, tiny_bert_dir):
    _, ckpt, _ = trained
    with pytest.raises(MedzooDataError, match=r"expected one of"):
        main(["evaluate", "--dataset", "mimic", "--root", str(tmp_path), "--ckpt", str(ckpt)])
    with pytest.raises(MedzooDataError, match="no such file"):
        main(
            [
                "zeroshot",
                "--images",
                str(tmp_path),
                "--findings",
                "Effusion",
                "--ckpt",
                str(tmp_path / "x.ckpt"),
            ]
        )
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(MedzooDataError, match="unreadable checkpoint"):
        main(["zeroshot", "--images", str(tmp_path), "--findings", "Effusion", "--ckpt", str(truncated)])
    # An image listed in the NIH table but missing on disk.
    data = tmp_path / "nih"
    shutil.copytree(trained[0] / "data", data, ignore=shutil.ignore_patterns("*.png"))
    with pytest.raises(MedzooDataError, match="missing on disk"):
        main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt", str(ckpt)])


def test_paper_config_holds_the_paper_optimisation(tiny_bert_dir):
    from carzero.data import CARZeroDataModule
    from carzero.module import CARZeroModule
    from medzoo.lightning import cli

    built = cli(CARZeroModule, CARZeroDataModule, package="carzero", run=False, args=[
        "--config", "paper", f"--model.text_model={tiny_bert_dir}", "--model.vit=tiny",
        "--model.max_words=24", "--trainer.precision=32", "--trainer.logger=false",
    ])  # fmt: skip
    optimizers = built.model.configure_optimizers()
    adam = optimizers["optimizer"]
    assert isinstance(adam, torch.optim.Adam)
    assert adam.defaults["lr"] == 5e-5 and adam.defaults["betas"] == (0.5, 0.999)
    assert adam.defaults["weight_decay"] == 1e-6
    plateau = optimizers["lr_scheduler"]
    assert isinstance(plateau["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert plateau["monitor"] == "val/loss" and plateau["scheduler"].factor == 0.5
    assert plateau["scheduler"].patience == 5
    assert built.trainer.gradient_clip_val == 0.25 and built.trainer.max_epochs == 15
    assert built.trainer.reload_dataloaders_every_n_epochs == 1
    assert built.datamodule.batch_size_schedule == {0: 64, 2: 128, 6: 256}
    assert (built.datamodule.resize, built.datamodule.crop) == (256, 224)
    fusion = built.model.model.fusion
    assert len(fusion.layers) == 4 and isinstance(fusion.head, torch.nn.Linear)


def test_prompt_features_are_encoded_once_per_run(trained):
    _, ckpt, _ = trained
    from carzero.cli import _score, _transform, load_module
    from carzero.data import ImageFolderDataset

    if not (NIH / "images").is_dir():
        pytest.skip(f"real NIH images not found at {NIH}")
    module = load_module(ckpt)
    calls = []
    encode_text = module.model.encode_text
    module.model.encode_text = lambda *a, **k: calls.append(1) or encode_text(*a, **k)
    dataset = ImageFolderDataset(NIH / "images", _transform(module))
    scores = _score(module, dataset, FINDINGS, batch_size=1, device="cpu")  # two batches
    assert scores.shape == (2, len(FINDINGS)) and len(calls) == 1
