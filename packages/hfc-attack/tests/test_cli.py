from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hfc_attack.cli import COMMANDS, load_checkpoint, main
from medzoo.errors import MedzooDataError
from medzoo.io import read_image

SMALL = [
    "--data.demo_images",
    "40",
    "--data.demo_size",
    "32",
    "--data.image_size",
    "[32, 32]",
    "--data.batch_size",
    "8",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny demo run: fit (2 epochs) in a temporary folder with its own demo cache."""
    root = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDZOO_CACHE", str(root / "cache"))
    mp.chdir(root)
    main(
        [
            "fit",
            "--config",
            "demo",
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            *SMALL,
        ]
    )
    yield root
    mp.undo()


def test_fit_checkpoint_reloads_identically(run, monkeypatch):
    monkeypatch.chdir(run)
    module, data = load_checkpoint("best", Path("runs/hfc-attack-demo"))
    raw = torch.load("runs/hfc-attack-demo/checkpoints/best.ckpt", weights_only=True)
    assert data.image_size == (32, 32) and data.demo_images == 40
    x = torch.rand(2, 3, 32, 32)
    again, _ = load_checkpoint("runs/hfc-attack-demo/checkpoints/best.ckpt", Path("."))
    torch.testing.assert_close(module(x), again(x))
    torch.testing.assert_close(
        module.state_dict()["model.net.fc.weight"], raw["state_dict"]["model.net.fc.weight"]
    )


def test_test_and_predict_round_trip(run, monkeypatch):
    monkeypatch.chdir(run)
    main(
        ["test", "--config", "demo", "--ckpt_path", "best", "--trainer.enable_progress_bar", "false", *SMALL]
    )
    images = next((run / "cache").rglob("test/NORMAL"))
    main(["predict", "--config", "demo", "--ckpt_path", "best", "--data.predict_root", str(images), *SMALL])
    out = run / "runs/hfc-attack-demo/predictions"
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(list(images.iterdir()))
    np.testing.assert_allclose(summary[["p0", "p1"]].sum(axis=1), 1.0, rtol=1e-5)
    record = json.loads((out / f"{Path(summary['image'][0]).stem}.json").read_text())
    assert record["predicted_class"] == int(np.argmax(record["probabilities"]))


def test_attack_study_pipeline(run, monkeypatch):
    monkeypatch.chdir(run)
    rd = ["--root_dir", "runs/hfc-attack-demo"]
    COMMANDS["fit-gmm"](n_components=2, max_iter=100, n_init=1)
    assert (run / "runs/hfc-attack-demo/gmm.npz").is_file()
    for split in ("train", "test"):
        main(["attack", "--attack", "bim", "--eps", "8", "--steps", "5", "--split", split, *rd])
    main(["attack", "--attack", "bim", "--eps", "8", "--split", "test", "--hfc", "true", "--alpha", "1", *rd])
    folder = run / "runs/hfc-attack-demo/attacks"
    summary = pd.read_csv(folder / "bim-eps8/test/summary.csv")
    assert (summary["linf_256"] <= 8 + 1e-3).all() and (summary["linf_256"] > 0).all()
    row = summary.iloc[0]
    adv = np.load(folder / "bim-eps8/test" / row["image"])
    png = read_image(folder / "bim-eps8/test" / row["image"].replace(".npy", ".png")).array
    assert (
        png.shape[:2] == adv.shape[1:]
        and np.abs(png / 255 - adv.transpose(1, 2, 0)).max() <= 0.5 / 255 + 1e-6
    )
    main(["fit-detectors", "--attack_dir", str(folder / "bim-eps8/train"), "--detectors", "mahalanobis,kd,bu",
          "--bu_samples", "4", *rd])  # fmt: skip
    table = COMMANDS["evaluate"]([folder / "bim-eps8/test", folder / "bim_hfc-eps8/test"], bu_samples=4)
    assert set(table["detector"]) == {"mahalanobis", "kd", "bu"}
    assert set(table["attack"]) == {"bim-eps8", "bim_hfc-eps8"}
    assert table["auroc"].between(0, 1).all() and (run / "runs/hfc-attack-demo/evaluation.csv").is_file()


def test_cli_bad_inputs(run, monkeypatch):
    monkeypatch.chdir(run)
    with pytest.raises(MedzooDataError, match="eps"):
        main(["attack", "--eps", "0", "--root_dir", "runs/hfc-attack-demo"])
    with pytest.raises(MedzooDataError):
        main(["attack", "--ckpt_path", "missing.ckpt"])
    with pytest.raises(MedzooDataError, match=r"summary\.csv"):
        main(["fit-detectors", "--attack_dir", "nowhere/train", "--root_dir", "runs/hfc-attack-demo"])
