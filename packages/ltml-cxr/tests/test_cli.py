"""``ltml-cxr fit -> test -> predict`` on the demo config, losses selectable by config, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from ltml_cxr.cli import main
from ltml_cxr.module import LTMLModule, warmup_multistep_factor
from medzoo.errors import MedzooDataError


def _common(data, runs, loss="anr_llm") -> list[str]:
    return [
        "--config", "demo",
        "--data.root", str(data),
        "--data.synthetic.n_images", "24",
        "--data.synthetic.size", "[32, 32]",
        "--data.synthetic.min_positives_per_class", "2",
        "--data.image_size", "32",
        "--data.batch_size", "4",
        "--model.loss", loss,
        "--trainer.default_root_dir", str(runs),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def test_cli_round_trip_fit_test_predict(tmp_path):
    data, runs = tmp_path / "demo", tmp_path / "runs"
    common = _common(data, runs)
    main(["fit", *common, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"])
    best = runs / "checkpoints" / "best.ckpt"  # the best validation mAP, which test and predict score
    assert (runs / "checkpoints" / "last.ckpt").is_file() and best.is_file()
    assert (data / "Data_Entry_2017.csv").is_file()  # the demo generated its data into the empty root
    restored = LTMLModule.load_from_checkpoint(best, weights_only=True)
    assert restored.class_names[:2] == ["Atelectasis", "Cardiomegaly"] and restored.num_classes == 14
    assert restored.criterion.large_loss == "modify" and restored.criterion.num_samples.item() > 2
    assert restored.criterion.class_counts.sum().item() > 14  # the training split's counts, not placeholders

    main(["test", *common, "--ckpt_path", str(best)])
    metrics = pd.concat(pd.read_csv(p) for p in (runs / "csv").glob("version_*/metrics.csv"))
    for key in ("test/mAP", "test/auc_macro_all", "test/auc_micro_all", "test/f1_macro_all", "val/mAP"):
        assert metrics[key].notna().any(), key
    assert 0.0 <= metrics["test/mAP"].dropna().iloc[-1] <= 1.0

    main(["predict", *common, "--ckpt_path", str(best), "--data.predict_root", str(data / "images")])
    out = runs / "predictions"
    images = sorted((data / "images").glob("*.png"))
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["image"]) == sorted(map(str, images))
    assert list(summary.columns[1:3]) == ["Atelectasis", "Cardiomegaly"] and summary.shape[1] == 15
    for _, row in summary.iterrows():
        table = pd.read_csv(out / f"{row['image'].split('/')[-1][:-4]}.csv")
        assert list(table.columns) == ["class", "probability", "logit", "positive"] and len(table) == 14
        np.testing.assert_allclose(table["probability"], 1 / (1 + np.exp(-table["logit"])), rtol=1e-5)
        np.testing.assert_allclose(row.iloc[1:].to_numpy(float), table["probability"], rtol=1e-6)
        assert ((table["logit"] > 0).astype(int) == table["positive"]).all()


def test_predictions_match_the_model(tmp_path):
    data, runs = tmp_path / "demo", tmp_path / "runs"
    common = _common(data, runs, loss="db")
    main(["fit", *common, "--trainer.fast_dev_run", "true"])
    # fast_dev_run writes no checkpoint: save one, then predict one file.
    module = LTMLModule(num_classes=14, variant="tiny", loss="db").eval()
    torch.save({"state_dict": module.state_dict(), "class_names": [f"c{i}" for i in range(14)],
                "pytorch-lightning_version": "2.4.0"}, tmp_path / "model.ckpt")  # fmt: skip
    image = sorted((data / "images").glob("*.png"))[0]
    main(["predict", *common, "--ckpt_path", str(tmp_path / "model.ckpt"), "--data.predict_root", str(image)])
    table = pd.read_csv(runs / "predictions" / f"{image.stem}.csv")
    from ltml_cxr.data import build_transform, read_cxr

    with torch.no_grad():
        expected = module(build_transform(False, 32)(read_cxr(image))[None])[0].sigmoid().numpy()
    np.testing.assert_allclose(table["probability"], expected, rtol=1e-5, atol=1e-6)
    assert table["class"].tolist()[:2] == ["c0", "c1"]


@pytest.mark.parametrize("loss", ["ce", "focal", "db", "anr", "anr_lla", "anr_llm"])
def test_every_loss_is_selectable_by_config(loss, tmp_path):
    cli = main_cli([*_common(tmp_path / "demo", tmp_path / "runs", loss)])
    expected = {"ce": (False, "plain"), "focal": (True, "plain"), "db": (True, "scaled")}
    focal, negatives = expected.get(loss, (True, "adaptive"))
    assert (cli.model.criterion.focal, cli.model.criterion.negatives) == (focal, negatives)


def main_cli(args):
    from ltml_cxr.data import LTMLDataModule
    from medzoo.lightning import cli

    return cli(LTMLModule, LTMLDataModule, package="ltml_cxr", args=args, run=False)


def test_warmup_multistep_schedule_known_answer():
    # 10 steps per epoch, steps at epochs 5 and 7, 500-iteration warm-up from 1/3.
    factor = lambda step: warmup_multistep_factor(step, 10, [5, 7], 0.1, 500, 1 / 3)  # noqa: E731
    assert factor(0) == pytest.approx(1 / 3)
    assert factor(250) == pytest.approx((1 / 3 + 2 / 3 * 250 / 500) * 0.01)  # epoch 25: after both steps
    no_warmup = lambda step: warmup_multistep_factor(step, 10, [5, 7], 0.1, 0, 1 / 3)  # noqa: E731
    assert [no_warmup(s) for s in (0, 49, 50, 69, 70)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cli_missing_data_root_is_a_clear_error(tmp_path):
    args = ["fit", *_common(tmp_path / "absent", tmp_path / "runs"), "--data.synthetic", "null"]
    with pytest.raises(MedzooDataError, match="absent: no such folder"):
        main(args)


def test_console_script_prints_one_line_error(tmp_path):
    code = "from ltml_cxr.cli import main; main()"
    args = ["fit", *_common(tmp_path / "absent", tmp_path / "runs"), "--data.synthetic", "null"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ltml_cxr: error:")
    assert "Traceback" not in result.stderr
