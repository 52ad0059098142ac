"""``han-landmark fit -> test -> predict`` on the demo config, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from han_landmark import create_model
from han_landmark.cli import main
from han_landmark.data import LandmarkDataset, LandmarkSample
from han_landmark.module import HANLandmarkModule, decode_average, to_original
from medzoo.errors import MedzooDataError
from medzoo.io import read_image
from medzoo.weights import load_weights


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
    best = runs / "checkpoints" / "best.ckpt"  # the best validation epoch, which test/predict/export score
    assert (runs / "checkpoints" / "last.ckpt").is_file() and best.is_file()
    assert (data / "landmarks.csv").is_file()  # the demo generated its phantoms into the empty root
    restored = HANLandmarkModule.load_from_checkpoint(best, weights_only=True)
    assert restored.model.num_landmarks == 6 and restored.loss_weights == (1000.0, 3000.0, 3000.0)

    main(["test", *common, "--ckpt_path", str(best)])
    metrics = pd.concat(pd.read_csv(p) for p in (runs / "csv").glob("version_*/metrics.csv"))
    assert metrics["test/mre_px"].notna().any() and metrics["val/mre"].notna().any()

    main(["predict", *common, "--ckpt_path", str(best), "--data.predict_root", str(data / "images")])
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

    # export: the ONNX graph in onnxruntime equals PyTorch, and its decoded points equal predict's CSV
    ort = pytest.importorskip("onnxruntime")
    export_dir = tmp_path / "export"
    shape = ["--input_size", "[64, 64]", "--keep_aspect", "false", "--padding", "1.0"]
    onnx_path = _export(best, "onnx", export_dir, shape)
    contract = json.loads((export_dir / "han_landmark.json").read_text())
    assert contract["input"]["shape"] == [1, 3, 64, 64] and contract["input"]["keep_aspect"] is False
    assert [o["stride"] for o in contract["outputs"]] == [4, 2, 1]
    item = LandmarkDataset([LandmarkSample(images[0], np.full((6, 2), np.nan), np.zeros(6, bool))], (64, 64))[
        0
    ]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"image": item["image"][None].numpy()})
    with torch.no_grad():
        torch_out = restored.eval().model(item["image"][None])
    for got, want in zip(onnx_out, torch_out, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    coords = to_original(
        decode_average([torch.from_numpy(o) for o in onnx_out], (64, 64)), item["to_input"][None]
    )
    table = pd.read_csv(out / f"{images[0].stem}.csv")
    np.testing.assert_allclose(coords[0].numpy(), table[["x", "y"]].to_numpy(), atol=1e-3)
    # safetensors: the weights rebuild the same network
    weights = load_weights(_export(best, "safetensors", export_dir, shape))
    rebuilt = create_model("tiny", num_landmarks=6)
    rebuilt.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(item["image"][None])[2], torch_out[2])
    with pytest.raises(MedzooDataError, match="--input_size"):
        main(["export", "--ckpt_path", str(best), "--output_dir", str(export_dir)])


def _export(ckpt: Path, fmt: str, output_dir: Path, shape: list[str]) -> Path:
    main(["export", "--ckpt_path", str(ckpt), "--format", fmt, "--output_dir", str(output_dir), *shape])
    path = output_dir / f"han_landmark.{fmt}"
    assert path.is_file()
    return path


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


def test_cli_labelme_two_annotators_fixed_split_fit_and_test_report(tmp_path):
    from medzoo.io import read_landmark_csv
    from medzoo.synthetic import make_landmark_phantoms

    phantoms = make_landmark_phantoms(tmp_path / "csv", n_images=12, num_landmarks=11, size=(64, 48))
    root, runs = tmp_path / "labelme", tmp_path / "runs"
    labels = [f"L{k}" for k in range(11)]
    rng = np.random.default_rng(0)
    stems = []
    for name, coords in read_landmark_csv(phantoms / "landmarks.csv").items():
        stem = Path(name).stem
        stems.append(stem)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / name).write_bytes((phantoms / "images" / name).read_bytes())
        for annotator, points in (("dr_a", coords), ("dr_b", coords + rng.normal(0, 1, coords.shape))):
            shapes = [
                {"label": lb, "points": [list(p)], "shape_type": "point"}
                for lb, p in zip(labels, points, strict=True)
            ]
            (root / annotator).mkdir(exist_ok=True)
            record = {"shapes": shapes, "imagePath": f"../images/{name}"}
            (root / annotator / f"{stem}.json").write_text(json.dumps(record))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(stems[:8]))
    (root / "splits" / "val.txt").write_text("\n".join(stems[8:10]))
    (root / "splits" / "test.txt").write_text("\n".join(stems[10:]))
    args = [
        "--config", "demo", "--data.root", str(root), "--data.layout", "labelme", "--data.annotator", "mean",
        "--data.num_landmarks", "11", "--model.num_landmarks", "11",
        "--data.landmark_labels", json.dumps(labels),
        "--data.input_size", "[64, 48]", "--data.batch_size", "4", "--trainer.default_root_dir", str(runs),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    main(["fit", *args, "--trainer.max_epochs", "1"])
    main(["test", *args, "--ckpt_path", str(runs / "checkpoints" / "best.ckpt")])
    metrics = pd.concat(pd.read_csv(p) for p in (runs / "csv").glob("version_*/metrics.csv"))
    for name in ("test/mre_px", "test/mre_px_median", "test/mre_px_std", "test/sdr_20px_scaled"):
        assert metrics[name].notna().any(), name
    table = pd.read_csv(runs / "test_per_landmark.csv")
    assert table["landmark"].tolist() == [str(k) for k in range(11)] + ["all"]
    assert (table["n"][:11] == 2).all()  # the two images of test.txt, every landmark placed
    per_landmark = [c for c in metrics.columns if c.startswith("test/mre_px_landmark")]
    assert per_landmark == sorted(per_landmark) and per_landmark[-1] == "test/mre_px_landmark10"
