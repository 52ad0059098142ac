"""Training and evaluation: 3D Dice vs MONAI, the CLI round trip search -> fit -> test -> predict, real CT."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from fewshot_augsearch.augment import load_params
from fewshot_augsearch.cli import main
from fewshot_augsearch.data import FewShotDataModule, OneShotDataset, Scan
from fewshot_augsearch.module import FewShotSegmentationModule
from medzoo.errors import MedzooDataError


def _synthetic_scan(seed: int) -> Scan:
    rng = np.random.default_rng(seed)
    label = np.zeros((12, 32, 32), dtype=np.int64)
    label[3:9, 8 + seed : 20, 10:22] = 1
    image = np.clip(0.3 + 0.5 * (label == 1) + 0.05 * rng.standard_normal(label.shape), 0, 1).astype(
        np.float32
    )
    return Scan(str(seed), image, label, None, (32, 32, 12), np.eye(4), f"{seed}.nii.gz")


def test_module_3d_dice_equals_monai():
    from monai.metrics import DiceMetric

    module = FewShotSegmentationModule("tiny").eval()
    dataset = OneShotDataset(_synthetic_scan(0), [_synthetic_scan(1), _synthetic_scan(2)], [1])
    expected = []
    for item in dataset:
        module._evaluate(item, module.test_scores)
        prediction = module.volume_prediction(item, len(item["query_label"]))
        one_hot = [
            torch.nn.functional.one_hot(v, 2).permute(3, 0, 1, 2)[None].float()
            for v in (prediction, item["query_label"])
        ]
        expected.append(DiceMetric(include_background=False)(one_hot[0], one_hot[1]).item())
    gathered = module.test_scores.compute()["dice"].tolist()
    np.testing.assert_allclose(gathered, expected, atol=1e-6)
    assert not np.allclose(expected, expected[0] * 0)  # a real overlap, not two empty masks


def test_dice_known_answer():
    from medzoo.metrics import dice

    prediction = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target = torch.zeros_like(prediction)
    prediction[0, :2] = 1  # 32 voxels
    target[0, 1:3] = 1  # 32 voxels, 16 shared
    assert dice(prediction, target, num_classes=2)[0, 0] == pytest.approx(2 * 16 / 64)


@pytest.fixture
def demo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache" / "fewshot-augsearch" / "synthetic-ct-8"


FAST = ["--data.image_size=32", "--trainer.enable_progress_bar=false"]


def test_cli_search_fit_test_predict_round_trip(tmp_path, demo_cache, capsys):
    theta = tmp_path / "theta.yaml"
    main(
        [
            "search",
            "--image_size=32",
            "--crop_size=24",
            "--n_bins=4",
            "--n_augment=1",
            "--max_anchors=8",
            "--factors=[0, 1, 3]",
            f"--output={theta}",
        ]
    )
    searched = load_params(theta)
    root = tmp_path / "runs" / "fewshot-augsearch-demo"  # the demo's folder, where `search` resolves `best`
    fit = main(
        [
            "fit",
            "--config",
            "demo",
            f"--trainer.default_root_dir={root}",
            f"--data.augmentation={theta}",
            "--data.episodes_per_epoch=2",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=2",
            *FAST,
        ]
    )
    assert fit.datamodule.params == searched  # fit trains with the searched theta
    assert (root / "checkpoints" / "last.ckpt").is_file() and (root / "checkpoints" / "best.ckpt").is_file()
    cosine = tmp_path / "theta_cosine.yaml"
    main(
        [
            "search",
            "--image_size=32",
            "--crop_size=24",
            "--n_bins=4",
            "--n_augment=1",
            "--max_anchors=4",
            "--factors=[0, 2]",
            "--similarity=feature_cosine",
            "--ckpt_path=best",  # <cwd>/runs/fewshot-augsearch-demo/checkpoints/best.ckpt
            f"--output={cosine}",
        ]
    )
    assert load_params(cosine).rotate in (0.0, 10.0)  # one of the two candidates, scored by the encoder
    test = main(
        [
            "test",
            "--config",
            "demo",
            f"--trainer.default_root_dir={root}",
            "--ckpt_path=best",
            "--trainer.limit_test_batches=3",
            *FAST,
        ]
    )
    score = test.trainer.callback_metrics["test/dice"].item()
    assert 0.0 <= score <= 1.0
    predict_args = [
        "predict",
        "--config",
        "demo",
        f"--trainer.default_root_dir={root}",
        "--ckpt_path=best",
        *FAST,
        f"--data.predict_root={demo_cache / 'imagesTr' / 'synct_001.nii.gz'}",
        f"--data.support_image={demo_cache / 'imagesTr' / 'synct_000.nii.gz'}",
        f"--data.support_label={demo_cache / 'labelsTr' / 'synct_000.nii.gz'}",
        "--data.predict_class=1",
    ]
    main(predict_args)
    mask = nib.load(str(root / "predictions" / "synct_001_class1.nii.gz"))
    source = nib.load(str(demo_cache / "imagesTr" / "synct_001.nii.gz"))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    values = np.asarray(mask.dataobj)
    assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1}
    summary = pd.read_csv(root / "predictions" / "summary.csv")
    assert summary["mask"].tolist() == ["synct_001_class1.nii.gz"]
    assert summary["volume_ml"].iloc[0] == pytest.approx(values.sum() * 1.5**3 / 1000)


def test_predict_without_a_support_is_a_clear_error(tmp_path, demo_cache):
    data = FewShotDataModule(image_size=32, predict_root=str(tmp_path))
    with pytest.raises(MedzooDataError, match="support_image"):
        data.predict_dataloader()


def test_help_lists_the_extra_verbs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "search" in out and "pseudo-label" in out


def test_pseudo_label_writes_superpixel_files_the_alpnet_layout_reads(tmp_path, demo_cache):
    from fewshot_augsearch.data import make_demo_dataset

    root = make_demo_dataset(tmp_path / "ct", n_volumes=1)
    (path,) = main(["pseudo-label", f"--root={root}", f"--output_dir={tmp_path / 'sp'}", "--min_size=25"])
    labels = np.asarray(nib.load(str(path)).dataobj)
    image = np.asarray(nib.load(str(root / "imagesTr" / "synct_000.nii.gz")).dataobj)
    assert labels.shape == image.shape and labels.max() >= 2
    assert (labels[image < -500] == 0).all()  # outside the body (air) has no superpixel


def test_real_ct_one_shot_end_to_end(totalseg, tmp_path):
    """TotalSegmentator's CT: liver (label 5) segmented one-shot from the scan's own support slices and
    written as a NIfTI mask in the CT's grid (untrained network: this checks the pipeline, not accuracy)."""
    data = FewShotDataModule(
        image_size=64,
        predict_root=str(totalseg / "example_ct_sm.nii.gz"),
        support_image=str(totalseg / "example_ct_sm.nii.gz"),
        support_label=str(totalseg / "example_seg.nii.gz"),
        predict_class=5,
    )
    module = FewShotSegmentationModule("tiny")
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        callbacks=[module.prediction_writer()],
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    mask = nib.load(str(tmp_path / "predictions" / "example_ct_sm_class5.nii.gz"))
    source = nib.load(str(totalseg / "example_ct_sm.nii.gz"))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    summary = pd.read_csv(tmp_path / "predictions" / "summary.csv")
    z0, z1 = summary[["z_first", "z_last"]].iloc[0]
    liver = np.asarray(nib.load(str(totalseg / "example_seg.nii.gz")).dataobj) == 5
    zs = np.flatnonzero(liver.any(axis=(0, 1)))
    assert (z0, z1) == (zs[0], zs[-1])  # support == query: the mapped range is the liver's own
    assert not np.asarray(mask.dataobj)[..., : zs[0]].any()  # nothing outside the segmented range
