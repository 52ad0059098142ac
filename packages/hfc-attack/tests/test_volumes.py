"""3D volumes: the NIfTI layouts, the MONAI 3D ResNet under attack, and the CLI on the volume demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hfc_attack import build_attack, create_model, fit_class_gmms
from hfc_attack.cli import main
from hfc_attack.data import ClassificationDataModule, load_volume, make_volume_demo_set
from hfc_attack.models import FeatureExtractor
from medzoo.errors import MedzooDataError
from medzoo.io import read_image, write_png, write_volume

EPS = 4 / 256


def _volume(path: Path, value: float, shape=(8, 10, 12)) -> Path:
    return write_volume(path, np.full(shape, value, dtype=np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))


def test_load_volume_windows_and_resamples(tmp_path):
    ramp = np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4)  # (X, Y, Z)
    path = write_volume(tmp_path / "ramp.nii.gz", ramp, np.eye(4))
    same = load_volume(path, (4, 6, 8), None)  # (D, H, W) = (Z, Y, X): no resampling, min-max to [0, 1]
    torch.testing.assert_close(same[0], torch.from_numpy(ramp.transpose(2, 1, 0) / ramp.max()))
    half = load_volume(path, (2, 3, 4), (0.0, float(ramp.max())))  # area averaging of 2x2x2 blocks
    expected = F.avg_pool3d(torch.from_numpy(ramp.transpose(2, 1, 0) / ramp.max())[None, None], 2)[0]
    torch.testing.assert_close(half, expected)
    clipped = load_volume(_volume(tmp_path / "hu.nii.gz", 500), (4, 4, 4), (-1000.0, 0.0))
    assert clipped.shape == (1, 4, 4, 4) and bool((clipped == 1).all())


def test_volume_layouts_give_known_labels(tmp_path):
    for i in range(6):
        _volume(tmp_path / ("normal" if i % 2 else "bleed") / f"v{i}.nii.gz", 100 * i)
    (tmp_path / "bleed" / "notes.txt").write_text("ignored")
    data = ClassificationDataModule(
        tmp_path, layout="volume_folder", image_size=(4, 4, 4), channels=1, window=(0, 1000),
        split_fractions=(0.5, 0.25, 0.25),
    )  # fmt: skip
    records = data.records()
    assert sorted((r.path.name, r.label) for r in records) == [
        (f"v{i}.nii.gz", 1 if i % 2 else 0) for i in range(6)
    ]
    data.setup()
    sample = data.dataset("train")[0]
    value = 100 * int(Path(sample["name"]).stem.split(".")[0][1:]) / 1000
    assert sample["image"].shape == (1, 4, 4, 4) and torch.allclose(sample["image"], torch.tensor(value))
    data.batch_size = 2  # 3 training volumes: the lone last sample is dropped (BatchNorm needs 2)
    assert len(data.dataset("train")) == 3 and [len(b["label"]) for b in data.train_dataloader()] == [2]
    pd.DataFrame(
        {"path": ["bleed/v0.nii.gz", "normal/v1.nii.gz"], "label": [1, 0], "split": ["train", "test"]}
    ).to_csv(tmp_path / "labels.csv", index=False)
    records = ClassificationDataModule(
        tmp_path, layout="volume_csv", image_size=(4, 4, 4), channels=1
    ).records()
    assert [(r.path.name, r.label, r.split) for r in records] == [
        ("v0.nii.gz", 1, "train"),
        ("v1.nii.gz", 0, "test"),
    ]


def test_volume_demo_set_reads_the_same_in_both_layouts(tmp_path):
    root = make_volume_demo_set(tmp_path / "demo", n_volumes=4, size=16)
    kw = {"image_size": (16, 16, 16), "channels": 1, "window": (-200.0, 600.0)}
    folder = {
        r.path.name: r.label for r in ClassificationDataModule(root, layout="volume_folder", **kw).records()
    }
    table = {
        r.path.name: r.label for r in ClassificationDataModule(root, layout="volume_csv", **kw).records()
    }
    assert folder == table == {f"synthetic_{i:05d}.nii.gz": i % 2 for i in range(4)}
    # The lesion (~450 HU, radius 2 voxels) is the only tissue inside a 400..500 HU window (spine: 700 HU).
    lesion = {}
    for i in range(4):
        window = load_volume(next(root.rglob(f"*_{i:05d}.nii.gz")), (16, 16, 16), (400.0, 500.0))
        lesion[i] = int(((window > 0.05) & (window < 0.95)).sum())
    assert lesion[0] == lesion[2] == 0 and min(lesion[1], lesion[3]) >= 20


def test_bad_volume_data(tmp_path):
    _volume(tmp_path / "only" / "a.nii.gz", 0)
    with pytest.raises(MedzooDataError, match="two class folders"):
        ClassificationDataModule(tmp_path, layout="volume_folder", image_size=(4, 4, 4), channels=1).records()
    with pytest.raises(MedzooDataError, match="image_size"):
        ClassificationDataModule(tmp_path, layout="volume_folder", image_size=(4, 4), channels=1)
    with pytest.raises(MedzooDataError, match="channels"):
        ClassificationDataModule(tmp_path, layout="volume_folder", image_size=(4, 4, 4), channels=3)
    with pytest.raises(MedzooDataError, match="window"):
        ClassificationDataModule(
            tmp_path, layout="volume_csv", image_size=(4, 4, 4), channels=1, window=(5, 1)
        )
    write_png(tmp_path / "slice.png", np.zeros((4, 4), np.uint8))
    pd.DataFrame({"path": ["slice.png"], "label": [0]}).to_csv(tmp_path / "labels.csv", index=False)
    csv = ClassificationDataModule(tmp_path, layout="volume_csv", image_size=(4, 4, 4), channels=1)
    with pytest.raises(MedzooDataError, match="nii"):
        csv.records()
    pd.DataFrame({"path": ["x.nii.gz"], "label": ["bleed"]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(MedzooDataError, match="integer"):
        csv.records()
    with pytest.raises(MedzooDataError, match="missing"):
        load_volume(tmp_path / "missing.nii.gz", (4, 4, 4), None)
    with pytest.raises(MedzooDataError, match="2D"):
        load_volume(tmp_path / "slice.png", (4, 4, 4), None)


@pytest.fixture
def model3d() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet3d_tiny", drop_rate=0.0).eval()


def test_3d_resnet_normalises_inside(model3d):
    x = torch.rand(2, 1, 16, 16, 16)
    torch.testing.assert_close(model3d(x), model3d.net((x - 0.5) / 0.5))
    with pytest.raises(ValueError, match="3D classifier"):
        model3d(torch.rand(2, 1, 16, 16))
    big = create_model("resnet3d", drop_rate=0.0).eval()
    assert big(x).shape == (2, 2) and sum(p.numel() for p in big.parameters()) > 3e7  # MONAI ResNet-18 3D


def test_bim_and_hfc_step_on_volumes(model3d):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 16, 16, 16, generator=g)
    with torch.no_grad():
        y = model3d(x).argmax(1)
    adv = build_attack("bim", model3d, EPS, steps=1, alpha=EPS)(x, y)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model3d(adv), y) > F.cross_entropy(model3d(x), y)
    extractor = FeatureExtractor(model3d)
    with torch.no_grad():
        feats = extractor(torch.rand(12, 1, 16, 16, 16, generator=g))[1]
    gmms = fit_class_gmms(
        {k: v.numpy() for k, v in feats.items()}, np.arange(12) % 2, n_components=1, n_init=1
    )
    hfc, target = gmms.hfc_loss(), 1 - y
    attack = build_attack("bim", model3d, EPS, steps=1, alpha=EPS, targeted=True, hfc=hfc)
    adv = attack(x, y, target)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1

    def objective(images: torch.Tensor) -> torch.Tensor:  # what the targeted HFC attack descends
        with torch.no_grad():
            logits, features = extractor(images)
            return F.cross_entropy(logits, target) + hfc(features, target)

    assert objective(adv) < objective(x)
    for name in ("di", "ti"):
        with pytest.raises(MedzooDataError, match="2D only"):
            build_attack(name, model3d, EPS, steps=1)(x, y)


def test_cli_volume_demo_fit_attack_predict(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    small = ["--data.demo_images", "16", "--data.demo_size", "16", "--data.image_size", "[16, 16, 16]"]
    quiet = ["--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", "volume_demo", "--trainer.max_steps", "2", *quiet, *small])
    run = Path("runs/hfc-attack-volume_demo")
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "checkpoints/best.ckpt").is_file()
    main(
        ["attack", "--attack", "bim", "--eps", "8", "--steps", "2", "--split", "test", "--root_dir", str(run)]
    )
    folder = run / "attacks/bim-eps8/test"
    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) > 0 and (summary["linf_256"] <= 8 + 1e-3).all() and (summary["linf_256"] > 0).all()
    row = summary.iloc[0]
    assert row["source"].endswith(".nii.gz") and row["image"].endswith(".npy") and ".nii" not in row["image"]
    adv = np.load(folder / row["image"])
    png = read_image(folder / row["image"].replace(".npy", ".png")).array
    assert adv.shape == (1, 16, 16, 16) and adv.min() >= 0 and adv.max() <= 1
    assert np.abs(png / 255 - adv[0, 8]).max() <= 0.5 / 255 + 1e-6  # the middle slice
    volumes = next((tmp_path / "cache").rglob("lesion"))
    main(
        [
            "predict",
            "--config",
            "volume_demo",
            "--ckpt_path",
            "best",
            "--data.predict_root",
            str(volumes),
            *small,
        ]
    )
    predictions = pd.read_csv(run / "predictions/summary.csv")
    assert len(predictions) == len(list(volumes.glob("*.nii.gz")))
    np.testing.assert_allclose(predictions[["p0", "p1"]].sum(axis=1), 1.0, rtol=1e-5)
