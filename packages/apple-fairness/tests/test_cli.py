"""``apple-fairness train-segmentor fit -> fit -> test -> predict`` on a small demo; the frozen segmentor."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from apple_fairness.cli import main
from apple_fairness.module import APPLEModule, load_segmentor_state, state_fingerprint
from medzoo.errors import MedzooDataError, MedzooTrainingError
from medzoo.io import read_image, read_volume


def _common(data, runs) -> list[str]:
    return [
        "--data.root", str(data),
        "--data.synthetic_images", "24",
        "--data.synthetic_size", "32",
        "--data.image_size", "[32, 32]",
        "--data.val_fraction", "0.25",
        "--data.test_fraction", "0.25",
        "--data.batch_size", "4",
        "--trainer.default_root_dir", str(runs),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
    ]  # fmt: skip


def test_cli_round_trip_segmentor_fit_test_predict(tmp_path):
    data = tmp_path / "demo"
    seg_runs, runs = tmp_path / "seg", tmp_path / "apple"
    main(["train-segmentor", "fit", "--config", "train_segmentor_demo", *_common(data, seg_runs)])
    seg_ckpt = seg_runs / "checkpoints" / "best.ckpt"
    assert seg_ckpt.is_file() and (data / "metadata.csv").is_file()
    before = load_segmentor_state(seg_ckpt)

    common = [*_common(data, runs), "--model.segmentor_ckpt", str(seg_ckpt)]
    main(["fit", "--config", "demo", *common])
    best = runs / "checkpoints" / "best.ckpt"
    # the deployed segmentor is bit-identical after APPLE training (batch-norm statistics included), in the
    # checkpoint that is scored (best) and in the newest state (last)
    for saved in (best, runs / "checkpoints" / "last.ckpt"):
        after = load_segmentor_state(saved)
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("model.perturbers.0") for k in state) and any(
        k.startswith("probe.") for k in state
    )
    assert any(
        not torch.equal(v, torch.zeros_like(v))
        for k, v in state.items()
        if k.startswith("model.perturbers.0.out")
    )

    main(["test", "--config", "demo", *common, "--ckpt_path", "best"])
    report = json.loads((runs / "fairness" / "fairness_report.json").read_text())
    assert report["num_samples"] == 6 and set(report) >= {"baseline", "apple", "attribute_leakage"}
    assert set(report["attribute_leakage"]) == {
        "before_z",
        "after_z_perturbed",
        "retrained_on_z",
        "retrained_on_z_perturbed",
    }
    assert set(report["apple"]["dice"]) == {"overall", "per_group", "gap", "es_sum", "es_std"}
    table = pd.read_csv(runs / "fairness" / "fairness_report.csv")
    assert len(table) == 4 and {"group_A", "group_B", "es_sum", "es_std"} <= set(table.columns)
    assert read_image(runs / "fairness" / "fairness_dice.png").array.shape == (400, 640, 3)
    per_sample = pd.read_csv(runs / "fairness" / "per_sample.csv")
    assert per_sample["dice_apple"].mean() == pytest.approx(report["apple"]["dice"]["overall"])

    images = data / "images"
    main(
        [
            "predict",
            "--config",
            "demo",
            *common,
            "--ckpt_path",
            "best",
            "--data.predict_root",
            str(images),
            "--model.mask_format",
            "both",
        ]
    )
    out = runs / "predictions"
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 24 and list(summary.columns[:4]) == ["image", "mask", "height", "width"]
    mask = read_image(out / "case_0000_mask.png").array
    assert mask.shape == (32, 32) and set(mask.ravel().tolist()) <= {0, 1}
    volume = read_volume(out / "case_0000_mask.nii.gz")
    assert torch.equal(torch.as_tensor(volume.array[:, :, 0].T.astype("uint8")), torch.as_tensor(mask))


def test_fit_trains_the_missing_segmentor_where_train_segmentor_test_best_reads_it(tmp_path):
    import yaml

    configs = Path(__file__).parents[1] / "src" / "apple_fairness" / "configs"
    demo = yaml.safe_load((configs / "demo.yaml").read_text())
    stage1 = yaml.safe_load((configs / "train_segmentor_demo.yaml").read_text())
    # the demo freezes the best checkpoint of `train-segmentor fit --config train_segmentor_demo`
    root = stage1["trainer"]["default_root_dir"]
    assert demo["model"]["segmentor_ckpt"] == f"{root}/checkpoints/best.ckpt"

    data = tmp_path / "demo"
    seg_runs, runs = tmp_path / "seg", tmp_path / "apple"
    seg_ckpt = seg_runs / "checkpoints" / "best.ckpt"
    seg_args = ["--model.segmentor_ckpt", str(seg_ckpt), "--model.segmentor_epochs", "1"]
    main(["fit", "--config", "demo", *_common(data, runs), *seg_args])
    assert seg_ckpt.is_file()
    # the shipped demo's last command: the baseline's report from the segmentor that `fit` trained
    main(
        [
            "train-segmentor",
            "test",
            "--config",
            "train_segmentor_demo",
            *_common(data, seg_runs),
            "--ckpt_path",
            "best",
        ]
    )
    report = json.loads((seg_runs / "fairness" / "fairness_report.json").read_text())
    assert report["num_samples"] == 6


def test_fit_stops_when_the_segmentor_changes():
    module = APPLEModule(variant="tiny")
    module.on_fit_start()
    module.on_fit_end()  # unchanged: fine
    with torch.no_grad():
        next(module.model.segmentor.parameters()).add_(1e-6)
    with pytest.raises(MedzooTrainingError, match="bit-identical"):
        module.on_fit_end()


def test_fingerprint_sees_buffers_and_single_bits():
    module = APPLEModule(variant="tiny")
    reference = state_fingerprint(module.model.segmentor)
    bn = next(m for m in module.model.segmentor.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean[0] = torch.nextafter(bn.running_mean[0], torch.tensor(1.0))
    assert state_fingerprint(module.model.segmentor) != reference


def test_segmentor_checkpoint_errors(tmp_path):
    with pytest.raises(MedzooDataError, match="no such file"):
        APPLEModule(variant="tiny", segmentor_ckpt=str(tmp_path / "none.ckpt"))
    other = APPLEModule(variant="tiny_cmunext").model.segmentor
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in other.state_dict().items()}}, tmp_path / "cmunext.ckpt"
    )
    with pytest.raises(MedzooDataError, match="do not fit the variant"):
        APPLEModule(variant="tiny", segmentor_ckpt=str(tmp_path / "cmunext.ckpt"))


@pytest.mark.parametrize(
    ("config", "module"),
    [("paper", "APPLEModule"), ("tusc", "APPLEModule"), ("train_segmentor_paper", "SegmentorModule")],
)
def test_packaged_configs_build(config, module):
    from apple_fairness.data import SegmentationFairnessDataModule
    from apple_fairness.module import APPLEModule, SegmentorModule
    from medzoo.lightning import cli

    classes = {"APPLEModule": APPLEModule, "SegmentorModule": SegmentorModule}
    args = ["--config", config, "--trainer.logger", "false"]
    if module == "APPLEModule":
        args += ["--model.segmentor_ckpt", "null"]
    built = cli(
        classes[module], SegmentationFairnessDataModule, package="apple_fairness", args=args, run=False
    )
    assert built.datamodule.layout in ("fairseg", "tusc") and built.datamodule.image_size == (224, 224)
    if config == "paper":
        assert built.model.num_groups == 3 and built.model.num_classes == 3
        assert (built.model.beta, built.model.gamma, built.model.seg_weight, built.model.disc_lr_ratio) == (
            0.4,
            0.1,
            0.7,
            0.2,
        )


def test_mask_writer_keeps_inputs_with_the_same_name(tmp_path):
    import numpy as np

    from apple_fairness.writers import MaskWriter

    writer = MaskWriter(mask_format="png")
    masks = [np.zeros((5, 4), np.uint8), np.ones((5, 4), np.uint8)]
    prediction = {"path": ["a/x.png", "b/x.png"], "masks": masks, "num_classes": [2, 2]}
    rows = writer.write_batch(prediction, {"index": torch.tensor([0, 1])}, tmp_path)
    assert [r["mask"] for r in rows] == ["x_mask.png", "x_1_mask.png"]
    assert read_image(tmp_path / "x_1_mask.png").array.max() == 1 and rows[1]["fraction_class_1"] == 1.0
    with pytest.raises(MedzooDataError, match="mask_format"):
        MaskWriter(mask_format="jpeg")
