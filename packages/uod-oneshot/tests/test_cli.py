"""The whole CLI pipeline on a tiny demo in a tmp dir: ssl fit -> pick-template -> pseudo-label -> fit ->
test -> predict; checkpoints reload; errors are clear."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from medzoo.errors import MedzooDataError
from medzoo.io import read_image, read_landmark_csv
from uod_oneshot.cli import main
from uod_oneshot.module import DATRModule, UODSSLModule

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
STEPS = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "2",
]


def _domains(cache) -> str:
    common = {"synthetic_images": 10, "synthetic_size": [64, 64], "template": "phantom_0003.png"}
    return json.dumps(
        [
            {"name": "a", "num_landmarks": 6, "synthetic_seed": 0, **common},
            {"name": "b", "num_landmarks": 8, "synthetic_seed": 1, **common},
        ]
    )


def test_cli_pipeline_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    ssl_root, datr_root = tmp_path / "ssl", tmp_path / "datr"
    data = ["--data.domains", _domains(tmp_path), "--data.input_size", "96", "--data.val_fraction", "0.2"]
    main(["ssl", "fit", "--config", "ssl_demo", *data, "--data.crop_size", "64",
          "--trainer.default_root_dir", str(ssl_root), *STEPS, *QUIET])  # fmt: skip
    best = ssl_root / "checkpoints" / "best.ckpt"  # the best validation epoch, which the verbs reuse
    assert (ssl_root / "checkpoints" / "last.ckpt").is_file() and best.is_file()
    restored = UODSSLModule.load_from_checkpoint(best, weights_only=True)
    assert restored.crop_net is not None and restored.num_domains == 2

    choice = main(
        ["pick-template", "--ckpt_path", "best", "--root_dir", str(ssl_root), "--accelerator", "cpu"]
    )
    assert set(choice) == {"a", "b"} and all(c["template"].endswith(".png") for c in choice.values())

    summary = main(
        ["pseudo-label", "--ckpt_path", str(best), "--root_dir", str(ssl_root), "--accelerator", "cpu"]
    )
    labels = ssl_root / "pseudo_labels"
    table = read_landmark_csv(labels / "a.csv")
    template = next(k for k in table if k.endswith("phantom_0003.png"))
    truth = read_landmark_csv(next((tmp_path / "cache").rglob("a-*/landmarks.csv")))
    np.testing.assert_allclose(
        table[template], truth["phantom_0003.png"]
    )  # the template keeps its annotation
    assert len(table) == summary["a"]["images"] + 1
    assert all(v.shape == (8, 2) for v in read_landmark_csv(labels / "b.csv").values())
    assert summary["a"]["pseudo"]["mre"] > 0 and summary["b"]["mean_shape"]["mre"] > 0
    assert json.loads((labels / "summary.json").read_text())["a"]["images"] == summary["a"]["images"]

    common = ["--config", "demo", *data, "--trainer.default_root_dir", str(datr_root), *QUIET]
    main(["fit", *common, "--data.pseudo_labels", str(labels), *STEPS])
    ckpt = datr_root / "checkpoints" / "best.ckpt"
    model = DATRModule.load_from_checkpoint(ckpt, weights_only=True)
    assert model.num_landmarks == [6, 8] and model.domain_names == ["a", "b"]

    main(["test", *common, "--ckpt_path", "best"])
    metrics = pd.concat(pd.read_csv(p) for p in (datr_root / "csv").glob("version_*/metrics.csv"))
    for name in ("a", "b"):
        assert metrics[f"test/{name}/mre_px"].notna().any()
    assert metrics["test/mre"].dropna().iloc[-1] == pytest.approx(
        (metrics["test/a/mre"].dropna().iloc[-1] + metrics["test/b/mre"].dropna().iloc[-1]) / 2, rel=1e-5
    )

    images = sorted(next((tmp_path / "cache").rglob("b-*/images")).glob("*.png"))[:3]
    folder = tmp_path / "to_predict"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    main(
        [
            "predict",
            *common,
            "--ckpt_path",
            str(ckpt),
            "--data.predict_root",
            str(folder),
            "--data.predict_domain",
            "b",
        ]
    )
    out = datr_root / "predictions"
    summary_csv = pd.read_csv(out / "summary.csv")
    assert sorted(summary_csv["image"]) == [p.name for p in images] and set(summary_csv["domain"]) == {"b"}
    for image in images:
        per_image = pd.read_csv(out / f"{image.stem}.csv")
        assert len(per_image) == 8 and list(per_image.columns[:4]) == ["landmark", "x", "y", "score"]
        record = json.loads((out / f"{image.stem}.json").read_text())
        assert record["domain"] == "b" and (record["width"], record["height"]) == (64, 64)
        assert read_image(out / f"{image.stem}_overlay.png").array.shape == (64, 64, 3)
        # the CSV equals what the model decodes for this image
        row = summary_csv[summary_csv["image"] == image.name].iloc[0]
        np.testing.assert_allclose([row[f"x{k}"] for k in range(8)], per_image["x"], rtol=1e-9)


def test_mismatched_landmark_counts_between_model_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    args = ["fit", "--config", "demo", "--data.domains", _domains(tmp_path), "--data.labels", "ground_truth",
            "--model.num_landmarks", "[6, 7]", "--trainer.default_root_dir", str(tmp_path / "r"),
            *STEPS, *QUIET]  # fmt: skip
    with pytest.raises(MedzooDataError, match="landmark counts"):
        main(args)


def test_pseudo_label_without_checkpoint_is_a_one_line_error(tmp_path):
    code = "from uod_oneshot.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "pseudo-label", "--ckpt_path", "best", "--root_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "best.ckpt" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_extra_verbs():
    result = subprocess.run(
        [sys.executable, "-c", "from uod_oneshot.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0
    for verb in ("ssl", "pseudo-label", "pick-template", "fit", "predict"):
        assert verb in result.stdout
    assert torch


def test_pseudo_labels_embed_the_template_with_the_full_view_network(tmp_path, monkeypatch):
    """As in the reference's tester, the template and the targets both go through ``net``: with the crop
    network's embeddings zeroed (every cell would tie, so every label would land on the first cell), the
    labels still equal a direct match of ``net``'s template and target features."""
    from torch.utils.data._utils.collate import default_collate

    from uod_oneshot.data import LandmarkDataset, UODSSLDataModule, _Entry
    from uod_oneshot.matching import match_landmarks, template_features
    from uod_oneshot.pseudo import pseudo_label_domains

    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    domains = json.loads(_domains(tmp_path))[:1]
    datamodule = UODSSLDataModule(domains=domains, input_size=64, crop_size=32, val_fraction=0.2)
    datamodule.prepare_data()
    module = UODSSLModule(num_domains=1, variant="tiny").eval()
    with torch.no_grad():
        for projection in module.crop_net.projections:
            projection.weight.zero_()
            projection.bias.zero_()
    summary = pseudo_label_domains(module, datamodule, tmp_path / "labels")
    table = read_landmark_csv(tmp_path / "labels" / "a.csv")

    splits = datamodule.domain_splits[0]
    samples = [splits["train"][0], *splits["train"][1:], *splits["val"]]
    dataset = LandmarkDataset([_Entry(0, s, i) for i, s in enumerate(samples)], datamodule.specs, 64)
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        maps = module.embed(batch["image"], 0)
        queries = template_features([m[:1] for m in maps], batch["landmarks"][0], module.strides)
        expected, _ = match_landmarks([m[1:] for m in maps], queries, module.strides)
    got = np.stack([table[str(s.image)] for s in samples[1:]])
    assert summary["a"]["images"] == len(samples) - 1
    assert not np.allclose(got, 0.5)  # not the degenerate first cell of zeroed crop features
    np.testing.assert_allclose(got, expected.double().numpy(), atol=1e-6)  # 64 px in and out: same pixels
    # the report's like-for-like figure: the same matching on the test split, against its ground truth
    test = splits["test"]
    dataset = LandmarkDataset([_Entry(0, s, i) for i, s in enumerate(test)], datamodule.specs, 64)
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        found, _ = match_landmarks(module.embed(batch["image"], 0), queries, module.strides)
    errors = np.linalg.norm(found.double().numpy() - np.stack([s.coords for s in test]), axis=-1)
    assert len(test) > 0 and summary["a"]["test"]["mre"] == pytest.approx(errors.mean(), abs=1e-6)
