"""Loaders of the released layouts, invertible resizing, consistent augmentation and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from han_landmark.data import LandmarkDataModule, LandmarkDataset
from han_landmark.layouts import (
    CHEST_FLIP_PAIRS,
    LandmarkSample,
    hand_spacing,
    load_coco,
    load_csv_layout,
    load_hand_csv,
    load_isbi2015,
    load_labelme,
    load_normalized_txt_layout,
)
from han_landmark.transforms import (
    AugmentationConfig,
    apply_matrix,
    draw_scale_rotation,
    fit_matrix,
    resize_matrix,
)
from medzoo.errors import MedzooDataError


def _write_image(path: Path, size_hw=(40, 30), value=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size_hw, value, dtype=np.uint8)).save(path)
    return path


def _write_isbi(root: Path, stems=("001", "002"), k=3) -> dict[str, np.ndarray]:
    truth = {}
    for i, stem in enumerate(stems):
        _write_image(root / "RawImage" / "TrainingData" / f"{stem}.bmp")
        senior = np.array([[10 + i, 20], [5, 7], [12, 30]], dtype=float)[:k]
        junior = senior + 2.0
        for doctor, coords in (("senior", senior), ("junior", junior)):
            txt = root / "AnnotationsByMD" / f"400_{doctor}" / f"{stem}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            # ISBI files list K "x,y" lines, then extra lines (skeletal classes) that readers ignore
            txt.write_text("".join(f"{int(x)},{int(y)}\n" for x, y in coords) + "1\n2\n")
        truth[stem] = senior
    return truth


def test_isbi2015_loader_reads_senior_junior_and_mean(tmp_path):
    truth = _write_isbi(tmp_path)
    senior = load_isbi2015(tmp_path, "train", "senior", num_landmarks=3)
    junior = load_isbi2015(tmp_path, "train", "junior", num_landmarks=3)
    mean = load_isbi2015(tmp_path, "train", "mean", num_landmarks=3)
    assert [s.image.name for s in senior] == ["001.bmp", "002.bmp"]
    np.testing.assert_array_equal(senior[1].coords, truth["002"])
    np.testing.assert_array_equal(junior[1].coords, truth["002"] + 2)
    np.testing.assert_array_equal(mean[1].coords, truth["002"] + 1)
    assert senior[0].spacing == (0.1, 0.1)


def test_isbi2015_image_without_annotation_is_a_clear_error(tmp_path):
    _write_isbi(tmp_path)
    _write_image(tmp_path / "RawImage" / "TrainingData" / "003.bmp")
    with pytest.raises(MedzooDataError, match=r"003\.bmp: found no annotation .*400_senior/003\.txt"):
        load_isbi2015(tmp_path, "train", num_landmarks=3)


def test_isbi2015_wrong_landmark_count_is_a_clear_error(tmp_path):
    _write_isbi(tmp_path)
    with pytest.raises(MedzooDataError, match=r"001\.txt"):
        load_isbi2015(tmp_path, "train", num_landmarks=19)


def test_coco_loader_reads_keypoints_visibility_and_spacing(tmp_path):
    _write_image(tmp_path / "images" / "a.png")
    _write_image(tmp_path / "images" / "b.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 30, "height": 40, "pixel_spacing": 0.125},
            {"id": 2, "file_name": "b.png", "width": 30, "height": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "keypoints": [3, 4, 2, 5.5, 6.5, 1, 0, 0, 0]},
            {"id": 2, "image_id": 2, "keypoints": [1, 2, 2, 3, 4, 2, 5, 6, 2]},
        ],
        "categories": [{"id": 1, "name": "ceph", "keypoints": ["a", "b", "c"]}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))
    samples = load_coco(tmp_path / "train.json")
    assert [s.image.name for s in samples] == ["a.png", "b.png"]
    np.testing.assert_array_equal(samples[0].coords[:2], [[3, 4], [5.5, 6.5]])
    assert samples[0].visible.tolist() == [True, True, False]
    assert samples[0].spacing == (0.125, 0.125) and samples[1].spacing is None
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(MedzooDataError, match=r"b\.png: found no such file"):
        load_coco(tmp_path / "train.json")


def test_hand_csv_without_header_and_wrist_spacing(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.uniform(10, 100, (2, 37, 2))
    coords[0, 4] = coords[0, 0] + [30.0, 40.0]  # wrist width 50 px -> 1 mm/px
    _write_image(tmp_path / "images" / "3128.jpg")
    _write_image(tmp_path / "images" / "3129.jpg")
    rows = [[name, *c.ravel()] for name, c in zip(("3128", "3129"), coords, strict=True)]
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", header=False, index=False)
    samples = load_hand_csv(tmp_path / "all.csv", tmp_path / "images")
    assert [s.image.name for s in samples] == ["3128.jpg", "3129.jpg"]
    np.testing.assert_allclose(samples[0].coords, coords[0])
    assert samples[0].spacing == pytest.approx((1.0, 1.0))
    assert samples[1].spacing[0] == pytest.approx(hand_spacing(coords[1]))
    assert hand_spacing(coords[1]) == pytest.approx(50.0 / np.linalg.norm(coords[1, 0] - coords[1, 4]))


def test_csv_layout_missing_file_and_wrong_count(tmp_path):
    _write_image(tmp_path / "images" / "a.png")
    pd.DataFrame(
        [["a.png", 1, 2, 3, 4], ["gone.png", 1, 2, 3, 4]], columns=["image", "x0", "y0", "x1", "y1"]
    ).to_csv(tmp_path / "landmarks.csv", index=False)
    with pytest.raises(MedzooDataError, match=r"gone\.png: found no such file"):
        load_csv_layout(tmp_path, num_landmarks=2)
    with pytest.raises(MedzooDataError, match=r"landmarks\.csv: found 2 complete landmark column pairs"):
        load_csv_layout(tmp_path, num_landmarks=3)


def test_normalized_txt_layout_on_real_shenzhen_chest_data(shared_data: Path):
    SHENZHEN = shared_data / "chest-shenzhen"
    samples = load_normalized_txt_layout(SHENZHEN, image_dir="images", num_landmarks=6)
    assert len(samples) == 11
    cases = pd.read_csv(SHENZHEN / "cases.csv").set_index("image")
    for sample in samples:
        row = cases.loc[sample.image.name]
        expected = np.array([[row[f"lm{k}_x_px"], row[f"lm{k}_y_px"]] for k in range(6)])
        np.testing.assert_allclose(sample.coords, expected, atol=0.051)  # cases.csv rounds to 0.1 px


def test_normalized_txt_image_without_label_is_a_clear_error(tmp_path):
    _write_image(tmp_path / "images" / "x.png")
    (tmp_path / "labels").mkdir()
    with pytest.raises(MedzooDataError, match=r"x\.png: found no annotation"):
        load_normalized_txt_layout(tmp_path)


def test_resize_matrix_is_pixel_centre_aligned_and_invertible():
    matrix = resize_matrix((600, 500), (120, 100))
    corners = np.array([[-0.5, -0.5], [499.5, 599.5]])  # outer pixel edges map to outer edges
    np.testing.assert_allclose(apply_matrix(matrix, corners), [[-0.5, -0.5], [99.5, 119.5]])
    points = np.random.default_rng(0).uniform(0, 500, (7, 2))
    np.testing.assert_allclose(apply_matrix(np.linalg.inv(matrix), apply_matrix(matrix, points)), points)


def _dot_image(tmp_path: Path, size_hw=(90, 120), dots=((30.0, 40.0), (80.0, 50.0))) -> LandmarkSample:
    array = np.zeros(size_hw, dtype=np.uint8)
    for x, y in dots:
        array[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    path = tmp_path / "dots.png"
    Image.fromarray(array).save(path)
    coords = np.array(dots, dtype=float)
    return LandmarkSample(path, coords, np.ones(len(coords), dtype=bool))


def _brightest(image: torch.Tensor) -> np.ndarray:
    grey = image[0]
    row, col = divmod(int(grey.argmax()), grey.shape[1])
    return np.array([col, row], dtype=float)


def test_augmentation_moves_image_and_landmarks_together(tmp_path):
    sample = _dot_image(tmp_path, dots=((60.0, 45.0),))
    augmentation = AugmentationConfig(rotation_deg=30, rotation_prob=1.0, scale_factor=0.2, photometric=False)
    dataset = LandmarkDataset([sample], (96, 128), augmentation, seed=3)
    for epoch in range(4):
        item = dataset[(epoch, 0)]
        assert item["visible"][0] == 1
        np.testing.assert_allclose(_brightest(item["image"]), item["landmarks"][0].numpy(), atol=1.5)
        # the returned to_input maps the original annotation onto the returned landmark
        np.testing.assert_allclose(
            apply_matrix(item["to_input"].numpy(), sample.coords), item["landmarks"].numpy(), atol=1e-4
        )
    assert not torch.equal(dataset[(0, 0)]["image"], dataset[(1, 0)]["image"])  # the epoch changes the draw
    torch.testing.assert_close(dataset[(2, 0)]["image"], dataset[(2, 0)]["image"])  # and is reproducible


def test_no_flip_without_declared_pairs_and_label_swap_with_pairs(tmp_path):
    sample = _dot_image(tmp_path)
    fixed = {"rotation_prob": 0.0, "scale_factor": 0.0, "translation": 0.0, "flip_prob": 1.0}
    plain = LandmarkDataset([sample], (90, 120), AugmentationConfig(**fixed))
    for epoch in range(5):
        assert np.linalg.det(plain[(epoch, 0)]["to_input"].numpy()[:2, :2]) > 0  # never mirrored
    paired = LandmarkDataset(
        [sample], (90, 120), AugmentationConfig(**fixed, flip_pairs=((0, 1),), photometric=False)
    )
    item = paired[(0, 0)]
    assert np.linalg.det(item["to_input"].numpy()[:2, :2]) < 0
    mirrored = np.array([[119 - 30.0, 40.0], [119 - 80.0, 50.0]])
    # label 0 now names the mirrored position of the original landmark 1, and vice versa
    np.testing.assert_allclose(item["landmarks"].numpy(), mirrored[[1, 0]], atol=1e-4)
    assert item["image"][0, 50, 119 - 80] > item["image"][0, 0, 0]
    # the reference's cephalometric setting: mirrored, labels kept
    unpaired = LandmarkDataset(
        [sample], (90, 120), AugmentationConfig(**fixed, flip_without_pairs=True, photometric=False)
    )
    item = unpaired[(0, 0)]
    np.testing.assert_allclose(item["landmarks"].numpy(), mirrored, atol=1e-4)
    np.testing.assert_allclose(_brightest(item["image"]), mirrored[0], atol=1.0)


def test_scale_rotation_draws_follow_the_reference_distribution():
    rng = np.random.default_rng(0)
    draws = np.array([draw_scale_rotation(rng, 40.0, 0.6, 0.5, "normal") for _ in range(20000)])
    angle, scale = draws[:, 0], draws[:, 1]
    rotated = angle != 0
    assert rotated.mean() == pytest.approx(0.6, abs=0.015)
    assert np.abs(angle).max() <= 80.0 and np.abs(angle).max() > 75.0  # clipped at 2 sigma
    # clip(N(0, 40), +-80): the spread of a normal clipped at 2 sigma
    clipped_std = 40 * np.sqrt(stats_clipped_second_moment(2.0))
    assert angle[rotated].std() == pytest.approx(clipped_std, rel=0.03)
    assert scale.min() >= 0.5 and scale.max() <= 1.5 and (scale != 1.0).all()  # always drawn
    below = 0.5 * math.erfc(1 / math.sqrt(2))  # P(N(1, 0.5) < 0.5) = P(Z < -1): clipped to 0.5
    assert (scale == 0.5).mean() == pytest.approx(below, abs=0.01)
    assert (scale == 1.5).mean() == pytest.approx(below, abs=0.01)
    uniform = np.array([draw_scale_rotation(rng, 40.0, 0.6, 0.5, "uniform") for _ in range(4000)])
    moved = uniform[:, 0] != 0
    assert np.abs(uniform[:, 0]).max() <= 40 and (uniform[~moved, 1] == 1.0).all()
    assert uniform[moved, 1].std() == pytest.approx(1 / np.sqrt(12), rel=0.05)


def stats_clipped_second_moment(c: float) -> float:
    """E[clip(Z, -c, c)^2] for a standard normal Z (numerical, to check the clipped spread)."""
    z = np.linspace(-12, 12, 240001)
    density = np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi)
    return float(np.trapezoid(np.clip(z, -c, c) ** 2 * density, z))


def test_keep_aspect_with_padding_centres_the_image_and_inverts_exactly(tmp_path):
    size_hw, input_hw = (90, 120), (64, 64)
    matrix, resized = fit_matrix(size_hw, input_hw, keep_aspect=True, padding=1.25)
    scale = 64 / (120 * 1.25)
    assert resized == (round(90 * scale), round(120 * scale))
    centre = np.array([[(120 - 1) / 2, (90 - 1) / 2]])
    np.testing.assert_allclose(apply_matrix(matrix, centre), [[31.5, 31.5]], atol=0.5)  # centred
    assert matrix[0, 0] == pytest.approx(matrix[1, 1], rel=0.02)  # one scale for both axes
    sample = _dot_image(tmp_path)
    item = LandmarkDataset([sample], input_hw, keep_aspect=True, padding=1.25)[0]
    np.testing.assert_allclose(item["to_input"].numpy(), matrix)
    for k in range(2):  # the dot is where the matrix puts it, in a black frame
        dot = apply_matrix(matrix, sample.coords[k : k + 1])[0]
        assert item["image"][0, round(dot[1]), round(dot[0])] > item["image"][0].median()
    assert (item["image"][:, :, :5] == item["image"][:, :1, :1]).all()  # padded left border: black
    with pytest.raises(ValueError, match="keep_aspect"):
        fit_matrix(size_hw, input_hw, keep_aspect=False, padding=1.25)


def test_chest_flip_pairs_map_each_lung_onto_the_other(shared_data: Path):
    samples = load_normalized_txt_layout(shared_data / "chest-shenzhen", num_landmarks=6)
    for sample in samples:
        x = sample.coords[:, 0]
        for a, b in CHEST_FLIP_PAIRS:  # a pair: one landmark in each lung, same kind (apex, angle, base)
            assert (x[a] - x.mean()) * (x[b] - x.mean()) < 0
            assert abs(sample.coords[a, 1] - sample.coords[b, 1]) < 0.25 * np.ptp(sample.coords[:, 1])
    # mirrored and swapped, every landmark stays on its own side
    dataset = LandmarkDataset(
        samples[:1],
        (64, 64),
        AugmentationConfig(rotation_prob=0, scale_factor=0, translation=0, flip_prob=1.0,
                           flip_pairs=CHEST_FLIP_PAIRS, photometric=False),
        keep_aspect=False,
        padding=1.0,
    )  # fmt: skip
    plain = LandmarkDataset(samples[:1], (64, 64), keep_aspect=False, padding=1.0)
    flipped_x, plain_x = dataset[(0, 0)]["landmarks"][:, 0], plain[0]["landmarks"][:, 0]
    assert ((flipped_x[:3] < 32) == (plain_x[:3] < 32)).all()


def test_datamodule_synthesizes_phantoms_into_an_empty_root_and_splits_disjointly(tmp_path):
    dm = LandmarkDataModule(
        root=str(tmp_path / "phantoms"), layout="csv", num_landmarks=4, input_size=(32, 32),
        val_fraction=0.25, test_fraction=0.25, synthesize_if_missing=True, synthetic_images=8,
        synthetic_size=(48, 48),
    )  # fmt: skip
    dm.prepare_data()
    assert (tmp_path / "phantoms" / "landmarks.csv").is_file()
    dm.setup("fit")
    names = {split: {s.image.name for s in samples} for split, samples in dm.splits.items()}
    assert [len(names[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert not (names["train"] & names["val"]) and not (names["val"] & names["test"])
    assert not (names["train"] & names["test"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (1, 3, 32, 32) and batch["landmarks"].shape == (1, 4, 2)


def test_datamodule_missing_root_and_wrong_landmark_count(tmp_path):
    with pytest.raises(MedzooDataError, match="no such folder"):
        LandmarkDataModule(root=str(tmp_path / "absent"), layout="csv").setup("fit")
    dm = LandmarkDataModule(
        root=str(tmp_path / "p"), num_landmarks=4, synthesize_if_missing=True, synthetic_images=4
    )
    dm.synthetic_size = (32, 32)
    dm.prepare_data()
    dm.num_landmarks = 5
    with pytest.raises(MedzooDataError, match=r"landmarks\.csv: found 4 complete landmark column pairs"):
        dm.setup("fit")


# -- LabelMe, fixed splits, hand MHA, ISBI splits and spacing ------------------------------------------------


def _write_labelme(folder: Path, stem: str, points: dict[str, tuple[float, float]], image: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [{"label": k, "points": [list(p)], "shape_type": "point"} for k, p in points.items()]
    shapes.append({"label": "outline", "points": [[0, 0], [5, 5]], "shape_type": "rectangle"})  # ignored
    record = {"version": "5.4.1", "shapes": shapes, "imagePath": image, "imageHeight": 40, "imageWidth": 30}
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(record))
    return path


LABELS = ["S", "N", "Or"]


def _labelme_dataset(root: Path, n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    truth = {}
    for i in range(n):
        stem = f"ceph{i}"
        _write_image(root / "images" / f"{stem}.png")
        a = rng.uniform(2, 28, (3, 2))
        b = a + rng.normal(0, 1.5, (3, 2))
        _write_labelme(
            root / "dr_a", stem, dict(zip(LABELS, map(tuple, a), strict=True)), f"../images/{stem}.png"
        )
        _write_labelme(root / "dr_b", stem, dict(zip(LABELS, map(tuple, b), strict=True)), f"{stem}.png")
        truth[stem] = np.stack([a, b])
    return truth


def test_labelme_two_annotators_one_or_mean(tmp_path):
    truth = _labelme_dataset(tmp_path)
    a = load_labelme(tmp_path, 3, LABELS, annotator="dr_a")
    b = load_labelme(tmp_path, 3, LABELS, annotator="dr_b")  # imagePath not next to the JSON: root/images
    mean = load_labelme(tmp_path, 3, LABELS, annotator="mean")
    assert [s.image.name for s in mean] == [f"ceph{i}.png" for i in range(4)]
    for i, stem in enumerate(truth):
        np.testing.assert_allclose(a[i].coords, truth[stem][0])
        np.testing.assert_allclose(b[i].coords, truth[stem][1])
        np.testing.assert_allclose(mean[i].coords, truth[stem].mean(0))
    with pytest.raises(MedzooDataError, match=r"'dr_c'.*one of \['dr_a', 'dr_b'\] or 'mean'"):
        load_labelme(tmp_path, 3, LABELS, annotator="dr_c")
    with pytest.raises(MedzooDataError, match="3 labels"):
        load_labelme(tmp_path, 4, LABELS, annotator="dr_a")


def test_labelme_missing_duplicate_and_unknown_labels_are_named(tmp_path, caplog):
    truth = _labelme_dataset(tmp_path, n=2)
    _write_labelme(tmp_path / "dr_b", "ceph1", {"S": (3.0, 4.0), "Or": (5.0, 6.0)}, "ceph1.png")  # N missing
    with caplog.at_level("WARNING", logger="han_landmark"):
        mean = load_labelme(tmp_path, 3, LABELS, annotator="mean")
    assert "dr_b/ceph1.json: landmark 1" in caplog.text
    np.testing.assert_allclose(mean[1].coords[1], truth["ceph1"][0][1])  # only dr_a placed N: its point
    only_b = load_labelme(tmp_path, 3, LABELS, annotator="dr_b")
    assert np.isnan(only_b[1].coords[1]).all() and only_b[1].visible.tolist() == [True, False, True]
    path = tmp_path / "dr_b" / "ceph1.json"
    record = json.loads(path.read_text())
    record["shapes"].append({"label": "S", "points": [[1, 1]], "shape_type": "point"})
    path.write_text(json.dumps(record))
    with pytest.raises(MedzooDataError, match=r"ceph1\.json: found landmark 0 \('S'\) labelled twice"):
        load_labelme(tmp_path, 3, LABELS, annotator="dr_b")
    record["shapes"][-1]["label"] = "Sella"
    path.write_text(json.dumps(record))
    with pytest.raises(MedzooDataError, match=r"ceph1\.json: found point label 'Sella'.*landmark_labels"):
        load_labelme(tmp_path, 3, LABELS, annotator="dr_b")
    (tmp_path / "dr_b" / "ceph0.json").unlink()
    with pytest.raises(MedzooDataError, match=r"dr_b/ceph0\.json: found no such file"):
        load_labelme(tmp_path, 3, LABELS, annotator="mean")


def test_fixed_splits_from_lists_and_csv_column_are_disjoint_and_exact(tmp_path):
    _labelme_dataset(tmp_path, n=6)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("ceph0\nceph1.png\nceph2  # a comment\n")
    (tmp_path / "splits" / "test.txt").write_text("ceph4\nceph5\n")
    dm = LandmarkDataModule(
        root=str(tmp_path), layout="labelme", num_landmarks=3, landmark_labels=LABELS, annotator="mean",
        val_fraction=0.34,
    )  # fmt: skip
    dm.setup("fit")
    names = {k: sorted(s.image.stem for s in v) for k, v in dm.splits.items()}
    assert names["test"] == ["ceph4", "ceph5"]  # ceph3 is in no list: left out
    assert sorted(names["train"] + names["val"]) == ["ceph0", "ceph1", "ceph2"] and len(names["val"]) == 1
    (tmp_path / "splits" / "test.txt").write_text("ceph9\n")
    with pytest.raises(MedzooDataError, match=r"'ceph9', which names no image"):
        LandmarkDataModule(root=str(tmp_path), layout="labelme", num_landmarks=3, landmark_labels=LABELS,
                           annotator="dr_a").setup("fit")  # fmt: skip

    csv_root = tmp_path / "csv"
    rows = []
    for i, split in enumerate(["train", "train", "validate", "test", "train", "test"]):
        _write_image(csv_root / "images" / f"{i}.png")
        rows.append([f"{i}.png", 1.0 + i, 2.0, 3.0, 4.0, split])
    table = pd.DataFrame(rows, columns=["image", "x0", "y0", "x1", "y1", "split"])
    table.to_csv(csv_root / "landmarks.csv", index=False)
    dm = LandmarkDataModule(root=str(csv_root), layout="csv", num_landmarks=2)
    dm.setup("fit")
    names = {k: sorted(s.image.name for s in v) for k, v in dm.splits.items()}
    assert names == {"train": ["0.png", "1.png", "4.png"], "val": ["2.png"], "test": ["3.png", "5.png"]}
    np.testing.assert_allclose(dm.splits["val"][0].coords, [[3.0, 2.0], [3.0, 4.0]])


def test_hand_layout_finds_mha_images(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    coords = np.random.default_rng(0).uniform(10, 100, (37, 2))
    coords[4] = coords[0] + [30.0, 40.0]
    (tmp_path / "images").mkdir()
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((40, 30), dtype=np.uint16)), str(tmp_path / "images" / "7.mha")
    )
    pd.DataFrame([["7", *coords.ravel()]]).to_csv(tmp_path / "all.csv", header=False, index=False)
    samples = load_hand_csv(tmp_path / "all.csv", tmp_path / "images")
    assert samples[0].image.name == "7.mha" and samples[0].spacing == pytest.approx((1.0, 1.0))


def test_isbi_datamodule_splits_and_predict_spacing(tmp_path):
    _write_isbi(tmp_path, stems=[f"{i:03d}" for i in range(1, 11)])
    for stem in ("151", "152"):
        _write_image(tmp_path / "RawImage" / "Test1Data" / f"{stem}.bmp")
        for doctor in ("senior", "junior"):
            txt = tmp_path / "AnnotationsByMD" / f"400_{doctor}" / f"{stem}.txt"
            txt.write_text("1,2\n3,4\n5,6\n")
    dm = LandmarkDataModule(root=str(tmp_path), layout="isbi2015", num_landmarks=3, val_fraction=0.2)
    dm.setup("fit")
    names = {k: {s.image.name for s in v} for k, v in dm.splits.items()}
    assert len(names["train"]) == 8 and len(names["val"]) == 2 and not names["train"] & names["val"]
    assert names["test"] == {"151.bmp", "152.bmp"}  # Test1 only, never mixed into train/val
    assert all(s.spacing == (0.1, 0.1) for v in dm.splits.values() for s in v)
    predict = LandmarkDataModule(layout="isbi2015", num_landmarks=3, predict_root=str(tmp_path / "RawImage"))
    batch = next(iter(predict.predict_dataloader()))
    torch.testing.assert_close(batch["spacing"][0], torch.tensor([0.1, 0.1], dtype=torch.float64))
    override = LandmarkDataModule(layout="isbi2015", spacing=0.2, predict_root=str(tmp_path / "RawImage"))
    assert override.spacing_pair() == (0.2, 0.2)
    assert LandmarkDataModule(layout="csv").spacing_pair() is None


def test_paper_config_data_settings_are_the_reference_pipeline():
    from importlib.resources import files

    import yaml

    config = yaml.safe_load((files("han_landmark") / "configs" / "paper.yaml").read_text())
    dm = LandmarkDataModule(**config["data"])
    assert (dm.keep_aspect, dm.padding, dm.input_size) == (True, 1.25, (1216, 1024))
    aug = dm.augmentation
    # TopDownGetRandomScaleRotation(40, 0.5, rot_prob 0.6), TopDownRandomTranslation(0.15),
    # TopDownRandomFlip(0.4) with no pairs to swap
    assert (aug.scale_rotation, aug.rotation_deg, aug.rotation_prob, aug.scale_factor) == (
        "normal",
        40,
        0.6,
        0.5,
    )
    assert (aug.translation, aug.flip_prob, aug.flip_without_pairs, aug.flip_pairs) == (0.15, 0.4, True, ())
    assert config["model"]["variant"] == "paper"
