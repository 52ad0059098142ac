"""Layouts (ISBI 2015, hand CSV, JSRT + SCR, normalised TXT incl. the real Shenzhen files), domain batching,
the two-view SSL pairs, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medzoo.errors import MedzooDataError
from medzoo.io import write_landmark_csv, write_png
from uod_oneshot.data import DomainBatches, LandmarkDataset, SSLViewDataset, UODDataModule, _Entry
from uod_oneshot.layouts import LAYOUTS, LayoutRequest, hand_spacing, load_layout, read_scr_landmarks


def _image(path, h=40, w=50, value=None):
    rng = np.random.default_rng(0)
    write_png(
        path, (rng.integers(0, 255, (h, w)) if value is None else np.full((h, w), value)).astype(np.uint8)
    )
    return path


def test_isbi2015_layout(tmp_path):
    for folder in ("TrainingData", "Test1Data"):
        (tmp_path / "RawImage" / folder).mkdir(parents=True)
    (tmp_path / "AnnotationsByMD" / "400_senior").mkdir(parents=True)
    for stem, folder in (("001", "TrainingData"), ("002", "TrainingData"), ("151", "Test1Data")):
        _image(tmp_path / "RawImage" / folder / f"{stem}.bmp")
        lines = [f"{10 + k},{20 + k}" for k in range(19)] + ["1", "2"]
        (tmp_path / "AnnotationsByMD" / "400_senior" / f"{stem}.txt").write_text("\n".join(lines))
    splits = load_layout("isbi2015", LayoutRequest(tmp_path, 19))
    assert [s.image.stem for s in splits["train"]] == ["001", "002"]
    assert [s.image.stem for s in splits["test"]] == ["151"]
    assert splits["train"][0].spacing == (0.1, 0.1) and splits["train"][0].coords[3].tolist() == [13, 23]


def test_hand_layout_first_609_train_and_wrist_spacing(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(611):
        coords = np.zeros((37, 2))
        coords[4] = (100.0 + i, 0.0)
        rows.append([str(3000 + i), *coords.ravel().tolist()])
        if i in (0, 609, 610):
            _image(tmp_path / "images" / f"{3000 + i}.jpg")
    # only 3 images exist: write the CSV for the first 609 rows' images too (symlinks to one file)
    for i in range(611):
        target = tmp_path / "images" / f"{3000 + i}.jpg"
        if not target.exists():
            target.symlink_to(tmp_path / "images" / "3000.jpg")
    (tmp_path / "all.csv").write_text("\n".join(",".join(map(str, r)) for r in rows))
    splits = load_layout("hand", LayoutRequest(tmp_path, 37))
    assert len(splits["train"]) == 609 and len(splits["test"]) == 2
    assert splits["test"][0].spacing == pytest.approx((50 / 709, 50 / 709))
    assert hand_spacing(splits["train"][0].coords) == pytest.approx(0.5)


def _pfs(path, right_offset=0.0, left_offset=500.0):
    lines = ["[Data]", "[Label=right lung]", "44"]
    lines += [f"{{{right_offset + i}, {i * 2.0}}}," for i in range(44)]
    lines += ["[Label=heart]", "3", "{1, 1},", "{2, 2},", "{3, 3},", "[Label=left lung]", "50"]
    lines += [f"{{{left_offset + i}, {i * 3.0}}}," for i in range(50)]
    path.write_text("\n".join(lines))
    return path


def test_scr_landmarks_are_points_0_21_29_and_0_21_27_doubled(tmp_path):
    coords = read_scr_landmarks(_pfs(tmp_path / "JPCLN001.pfs"))
    expected = [(0, 0), (21, 42), (29, 58), (500, 0), (521, 63), (527, 81)]
    assert coords.tolist() == [[2.0 * x, 2.0 * y] for x, y in expected]
    (tmp_path / "bad.pfs").write_text("[Label=right lung]\n44\n{1, 2},\n")
    with pytest.raises(MedzooDataError, match=r"bad\.pfs"):
        read_scr_landmarks(tmp_path / "bad.pfs")


def test_jsrt_layout_split_matches_the_reference(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "landmarks").mkdir()
    names = [f"JPCNN{i:03d}" for i in range(1, 11)] + [f"JPCLN{i:03d}" for i in range(1, 61)]
    for name in names:
        _image(tmp_path / "images" / f"{name}.png", 8, 8)
        _pfs(tmp_path / "landmarks" / f"{name}.pfs")
    splits = load_layout("jsrt", LayoutRequest(tmp_path, 6))
    # int(10 * 0.2) = 2 JPCNN + 48 JPCLN in the test split (50), the rest train
    assert len(splits["test"]) == 50 and len(splits["train"]) == 20
    assert [s.image.stem for s in splits["test"][:2]] == ["JPCNN009", "JPCNN010"]
    assert splits["train"][0].spacing == (0.175, 0.175)


def test_shenzhen_normalized_txt_layout_matches_cases_csv(shared_data):
    import pandas as pd

    root = shared_data / "chest-shenzhen"
    splits = load_layout("normalized_txt", LayoutRequest(root, 6, test_fraction=0.0))
    samples = {s.image.name: s for s in splits["train"]}
    assert len(samples) == 11
    cases = pd.read_csv(root / "cases.csv")
    for _, row in cases.iterrows():
        expected = np.array([[row[f"lm{k}_x_px"], row[f"lm{k}_y_px"]] for k in range(6)])
        np.testing.assert_allclose(samples[row["image"]].coords, expected, atol=0.1)


def test_registry_names():
    assert set(LAYOUTS) == {"csv", "isbi2015", "hand", "jsrt", "normalized_txt"}


def _csv_domain(root, k=3, n=6, size=(32, 40)):
    (root / "images").mkdir(parents=True)
    table = {}
    for i in range(n):
        _image(root / "images" / f"im{i}.png", *size)
        table[f"im{i}.png"] = np.stack([np.arange(k) + 5.0 + i, np.arange(k) + 3.0], axis=1)
    write_landmark_csv(root / "landmarks.csv", table)
    return root


def _module(tmp_path, **kwargs):
    a, b = _csv_domain(tmp_path / "a"), _csv_domain(tmp_path / "b", k=4, n=5)
    domains = [
        {"name": "a", "root": str(a), "num_landmarks": 3, "template": "im2"},
        {"name": "b", "root": str(b), "num_landmarks": 4},
    ]
    return UODDataModule(domains=domains, input_size=32, labels="ground_truth", batch_size=2, **kwargs)


def test_datamodule_puts_the_template_first_and_batches_are_single_domain(tmp_path):
    dm = _module(tmp_path, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert dm.domain_splits[0]["train"][0].image.name == "im2.png"
    indices = [e.index for split in dm.splits.values() for e in split]
    assert len(indices) == len(set(indices))  # unique over domains and splits
    loader = dm.train_dataloader()
    seen = 0
    for batch in loader:
        assert batch["domain"].unique().numel() == 1
        k = 3 if int(batch["domain"][0]) == 0 else 4
        assert batch["landmarks"].shape[1:] == (k, 2) and batch["image"].shape[1:] == (1, 32, 32)
        seen += len(batch["index"])
    assert seen == len(dm.splits["train"])
    # the landmarks are mapped to the input: x' = (x + 0.5) * 32 / 40 - 0.5
    sample = LandmarkDataset(dm.splits["train"][:1], dm.specs, 32)[0]
    x = dm.splits["train"][0].sample.coords[0, 0]
    assert float(sample["landmarks"][0, 0]) == pytest.approx((x + 0.5) * 32 / 40 - 0.5, rel=1e-6)


def test_domain_order_alternates_and_shuffle_depends_only_on_seed_and_epoch(tmp_path):
    dm = _module(tmp_path, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    dataset = LandmarkDataset(dm.splits["train"], dm.specs, 32)
    alternate = DomainBatches(dataset, 2, "alternate", seed=0).batches(0)
    domains = [dataset.entries[b[0]].domain for b in alternate]
    assert domains[:4] == [0, 1, 0, 1]
    shuffle = DomainBatches(dataset, 2, "shuffle", seed=0)
    assert shuffle.batches(3) == DomainBatches(dataset, 2, "shuffle", seed=0).batches(3)
    assert shuffle.batches(3) != shuffle.batches(4)
    assert sorted(p for b in shuffle.batches(3) for p in b) == list(range(len(dataset)))


def test_ssl_views_points_correspond():
    # an image with a unique bright pixel: the crop point over it sees the same pixel value
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    from uod_oneshot.data import DomainSpec, apply_matrix, warp

    to_crop = np.array([[0.9, -0.2, 5.0], [0.2, 0.9, -3.0], [0, 0, 1.0]])
    view = warp(torch.from_numpy(image)[None], to_crop, 48)[0].numpy()
    full = np.array([[30.0, 20.0]])
    crop = apply_matrix(to_crop, full)
    # bilinear sample of the view at the crop point equals the image at the full point (integer position)
    y, x = crop[0, 1], crop[0, 0]
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    fy, fx = y - y0, x - x0
    interp = (
        view[y0, x0] * (1 - fy) * (1 - fx) + view[y0, x0 + 1] * (1 - fy) * fx
        + view[y0 + 1, x0] * fy * (1 - fx) + view[y0 + 1, x0 + 1] * fy * fx
    )  # fmt: skip
    assert abs(interp - image[20, 30]) < 0.15
    assert DomainSpec(name="x").layout == "csv"


def test_ssl_dataset_points_lie_inside_both_views(tmp_path):
    dm = _module(tmp_path, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    data = SSLViewDataset(dm.splits["train"], dm.specs, 32, 24, num_points=16)
    item = data[(0, 1)]
    assert item["crop"].shape == (1, 24, 24) and item["crop_points"].shape == (16, 2)
    assert bool((item["full_points"] >= 0).all() and (item["full_points"] <= 31).all())
    assert bool((item["crop_points"] >= 0).all() and (item["crop_points"] <= 23).all())
    assert torch.equal(data[(0, 1)]["crop"], item["crop"]) and not torch.equal(
        data[(1, 1)]["crop"], item["crop"]
    )


def test_bad_inputs(tmp_path, monkeypatch):
    # a domain with no images
    (tmp_path / "empty" / "images").mkdir(parents=True)
    write_landmark_csv(tmp_path / "empty" / "landmarks.csv", {})
    dm = UODDataModule(
        domains=[{"name": "e", "root": str(tmp_path / "empty"), "num_landmarks": 3}], labels="ground_truth"
    )
    with pytest.raises(MedzooDataError):
        dm.setup("fit")
    # mismatched landmark counts
    root = _csv_domain(tmp_path / "k3")
    dm = UODDataModule(domains=[{"name": "k", "root": str(root), "num_landmarks": 5}], labels="ground_truth")
    with pytest.raises(MedzooDataError, match="3 landmarks"):
        dm.setup("fit")
    # a template without landmarks (a layout that can express missing landmarks, added to the registry)
    from uod_oneshot.layouts import LandmarkSample

    def partial_layout(request):
        image = _image(request.root / "im.png")
        coords = np.array([[np.nan, np.nan], [1.0, 2.0], [3.0, 4.0]])
        return {"train": [LandmarkSample(image, coords)], "test": []}

    monkeypatch.setitem(LAYOUTS, "partial", partial_layout)
    (tmp_path / "partial").mkdir()
    dm = UODDataModule(
        domains=[{"name": "p", "layout": "partial", "root": str(tmp_path / "partial"), "num_landmarks": 3}],
        labels="ground_truth",
    )
    with pytest.raises(MedzooDataError, match="template"):
        dm.setup("fit")
    # a template that is not a training image, an unknown key, and no domains
    dm = UODDataModule(
        domains=[{"name": "t", "root": str(tmp_path / "k3"), "num_landmarks": 3, "template": "zz"}]
    )
    with pytest.raises(MedzooDataError, match="template"):
        dm.setup("test")
    with pytest.raises(MedzooDataError, match="keys"):
        UODDataModule(domains=[{"name": "t", "landmarks": 3}])
    with pytest.raises(MedzooDataError, match="domains"):
        UODDataModule(domains=[])
    # pseudo labels requested but not given
    dm = UODDataModule(
        domains=[{"name": "t", "root": str(tmp_path / "k3"), "num_landmarks": 3}], labels="pseudo"
    )
    with pytest.raises(MedzooDataError, match="pseudo"):
        dm.setup("fit")
    # a missing folder
    with pytest.raises(MedzooDataError, match="no such folder"):
        load_layout("isbi2015", LayoutRequest(tmp_path / "absent", 19))
    assert _Entry


def test_ssl_point_focus_draws_points_near_the_template_landmarks(tmp_path):
    dm = _module(tmp_path, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    centre = {0: np.array([[8.0, 8.0]])}
    plain = SSLViewDataset(dm.splits["train"], dm.specs, 32, 24, num_points=64)
    focused = SSLViewDataset(
        dm.splits["train"], dm.specs, 32, 24, num_points=64, focus=centre, focus_sigma=3.0
    )

    def mean_distance(data):
        points = np.concatenate([data[(e, 0)]["full_points"].numpy() for e in range(8)])
        return float(np.linalg.norm(points - centre[0], axis=1).mean())

    assert mean_distance(focused) < 0.6 * mean_distance(plain)
    item = focused[(0, 0)]  # the points still correspond and lie inside both views
    assert bool((item["full_points"] >= 0).all() and (item["full_points"] <= 31).all())
    assert bool((item["crop_points"] >= 0).all() and (item["crop_points"] <= 23).all())
    # the datamodule's option takes each domain's template landmarks in input px (training only)
    from uod_oneshot.data import UODSSLDataModule

    domains = [{"name": s.name, "root": s.root, "num_landmarks": s.num_landmarks, "template": s.template}
               for s in dm.specs]  # fmt: skip
    ssl = UODSSLDataModule(domains=domains, input_size=32, crop_size=24, point_focus=True,
                           val_fraction=0.0, test_fraction=0.0)  # fmt: skip
    ssl.setup("fit")
    train, template = ssl._dataset("train", True), LandmarkDataset(ssl.splits["train"][:1], ssl.specs, 32)[0]
    assert np.allclose(train.focus[0], template["landmarks"].numpy(), atol=1e-4)
    assert ssl._dataset("train", False).focus is None
