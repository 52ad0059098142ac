"""``han-landmark fit -> test -> predict`` on the demo config, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from han_landmark.cli import main
from han_landmark.module import HANLandmarkModule
from medzoo.errors import MedzooDataError
from medzoo.io import read_image


def _common(data, runs) -> list[str]:
    return [
        "--config", "demo",
        "--data.root", str(data),
        "--data.synthetic_images", "8",
        "--data.synthetic_size", "[64, 64]",
        "--data.input_size", "[64, 64]",
        "--data.val_fraction", "0.25",
        "--data.test_fraction", "0.25",
        "--data.batch_size", "2",
        "--trainer.default_root_dir", str(runs),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def test_cli_round_trip_fit_test_predict(tmp_path):
    data, runs = tmp_path / "phantoms", tmp_path / "runs"
    common = _common(data, runs)
    main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"])
    last = runs / "checkpoints" / "last.ckpt"
    assert last.is_file() and list((runs / "checkpoints").glob("best-*.ckpt"))
    assert (data / "landmarks.csv").is_file()  # the demo generated its phantoms into the empty root
    restored = HANLandmarkModule.load_from_checkpoint(last, weights_only=True)
    assert restored.model.num_landmarks == 6 and restored.loss_weights == (1000.0, 3000.0, 3000.0)

    main(["test", *common, "--ckpt_path", str(last)])
    metrics = pd.concat(pd.read_csv(p) for p in (runs / "csv").glob("version_*/metrics.csv"))
    assert metrics["test/mre_px"].notna().any() and metrics["val/mre"].notna().any()

    main(["predict", *common, "--ckpt_path", str(last), "--data.predict_root", str(data / "images")])
    out = runs / "predictions"
    images = sorted((data / "images").glob("*.png"))
    assert len(images) == 8
    for image in images:
        table = pd.read_csv(out / f"{image.stem}.csv")
        assert list(table.columns[:4]) == ["landmark", "x", "y", "score"] and len(table) == 6
        record = json.loads((out / f"{image.stem}.json").read_text())
        assert len(record["landmarks"]) == 6 and record["spacing_mm"] is None
        assert (record["width"], record["height"]) == (64, 64)
        overlay = read_image(out / f"{image.stem}_overlay.png").array
        assert overlay.shape == (64, 64, 3)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["image"]) == [p.name for p in images]
    for _, row in summary.iterrows():  # the summary repeats each image's own CSV
        table = pd.read_csv(out / f"{Path(row['image']).stem}.csv")
        np.testing.assert_allclose([row[f"x{k}"] for k in range(6)], table["x"], rtol=1e-9)
        np.testing.assert_allclose([row[f"y{k}"] for k in range(6)], table["y"], rtol=1e-9)
        assert row["mean_score"] == pytest.approx(table["score"].mean())


def test_cli_missing_data_root_is_a_clear_error(tmp_path):
    args = ["fit", *_common(tmp_path / "absent", tmp_path / "runs"), "--data.synthesize_if_missing", "false"]
    with pytest.raises(MedzooDataError, match="absent: found no such folder"):
        main(args)


def test_console_script_prints_one_line_error_without_traceback(tmp_path):
    code = "from han_landmark.cli import main; main()"
    args = [*_common(tmp_path / "absent", tmp_path / "runs"), "--data.synthesize_if_missing", "false"]
    result = subprocess.run(
        [sys.executable, "-c", code, "validate", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "no such folder" in result.stderr and "Traceback" not in result.stderr
