"""Data: layouts, folds, the 3-chunk protocol, setting 2, episodes, superpixels, real CT/MR, bad inputs."""

import json

import numpy as np
import pytest
import torch

from fewshot_augsearch.augment import AugmentationParams, augment
from fewshot_augsearch.data import (
    EpisodeDataset,
    OneShotDataset,
    Scan,
    body_mask,
    chunk_assignment,
    cv_folds,
    find_scans,
    load_scan,
    organ_z_range,
    preprocess_intensity,
    search_groups,
    slice_superpixels,
    support_slice_indices,
    training_slices,
)
from medzoo.errors import MedzooDataError
from medzoo.io import write_volume


def _scan(label: np.ndarray, scan_id: str = "s", seed: int = 0) -> Scan:
    rng = np.random.default_rng(seed)
    image = np.clip(0.5 + 0.1 * rng.standard_normal(label.shape), 0, 1).astype(np.float32)
    image[:, :2] = 0  # air at the top rows
    superpixels = np.zeros(label.shape, dtype=np.int32)
    superpixels[:, 2:, :8], superpixels[:, 2:, 8:] = 1, 2
    return Scan(scan_id, image, label, superpixels, (16, 16, len(label)), np.eye(4), f"{scan_id}.nii.gz")


def test_support_slices_and_chunks_known_answers():
    assert support_slice_indices(10, 19, 3) == [11, 14, 17]  # 10 + 1.5, 10 + 4.5, 10 + 7.5, floored
    assert support_slice_indices(0, 5, 1) == [2]
    assert chunk_assignment(9, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert chunk_assignment(7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert chunk_assignment(2, 3).tolist() == [0, 1]


def test_cross_validation_folds_known_answer():
    train, held, support = cv_folds(20, 5, 0)
    assert held == [0, 1, 2, 3] and support == 4 and train == list(range(5, 20))
    train, held, support = cv_folds(20, 5, 4)
    assert held == [16, 17, 18, 19] and support == 0 and 0 not in train
    with pytest.raises(MedzooDataError, match="fold"):
        cv_folds(4, 5, 0)


def test_setting_two_removes_every_slice_with_a_test_class():
    label = np.zeros((10, 16, 16), dtype=np.int64)
    label[2:4, 5:8, 5:8] = 1
    label[6, 9:12, 9:12] = 3
    label[8, 9:12, 9:12] = 2
    scans = [_scan(label), _scan(label[::-1].copy(), "t")]
    setting1 = training_slices(scans)
    setting2 = training_slices(scans, exclude_classes=[1, 3])
    assert len(setting1) == 20
    assert all(not np.isin(scans[s].label[z], [1, 3]).any() for s, z in setting2)
    assert {(0, 2), (0, 3), (0, 6), (1, 3)} & set(setting2) == set()
    assert len(setting2) == 20 - 6 and (0, 8) in setting2  # class 2 is not a test class here


def test_episodes_pair_two_augmentations_of_the_same_slice():
    label = np.zeros((6, 16, 16), dtype=np.int64)
    scans = [_scan(label, "a", 0), _scan(label, "b", 1)]
    params = AugmentationParams()
    dataset = EpisodeDataset(scans, params, length=4, seed=7)
    item = dataset[3]
    # Replay the documented draws: rng([seed, epoch, index]) -> slice, superpixel, two augmentations.
    rng = np.random.default_rng([7, 0, 3])
    s, z = dataset.pool[int(rng.integers(len(dataset.pool)))]
    assert (item["scan"], item["z"]) == (s, z)
    sp = rng.choice(np.array([1, 2]))
    mask = torch.as_tensor(scans[s].superpixels[z] == sp, dtype=torch.int64)
    image = torch.as_tensor(scans[s].image[z])[None]
    support = augment(image, mask, params, rng)
    query = augment(image, mask, params, rng)
    torch.testing.assert_close(item["support_image"], support[0])
    torch.testing.assert_close(item["query_image"], query[0])
    assert torch.equal(item["support_mask"], support[1]) and torch.equal(item["query_mask"], query[1])
    assert not torch.allclose(item["support_image"], item["query_image"])  # two different draws
    # Another epoch draws another episode for the same index.
    dataset.epoch_source = type("Sampler", (), {"epoch": 1})()
    assert not torch.equal(dataset[3]["query_image"], item["query_image"])


def test_one_shot_items_use_the_support_at_one_sixth_half_five_sixths():
    support_label = np.zeros((30, 16, 16), dtype=np.int64)
    support_label[10:20, 4:12, 4:12] = 2
    query_label = np.zeros((25, 16, 16), dtype=np.int64)
    query_label[3:12, 4:10, 4:10] = 2
    support, query = _scan(support_label, "sup"), _scan(query_label, "qry", 1)
    item = OneShotDataset(support, [query], [2])[0]
    torch.testing.assert_close(item["support_images"][:, 0], torch.as_tensor(support.image[[11, 14, 17]]))
    assert item["query_images"].shape == (9, 1, 16, 16) and item["z_range"].tolist() == [3, 11]
    assert item["chunks"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_a_support_mask_without_the_class_is_an_error():
    label = np.zeros((6, 16, 16), dtype=np.int64)
    label[2, 4:8, 4:8] = 1
    with pytest.raises(MedzooDataError, match="no voxel of class 3"):
        OneShotDataset(_scan(label), [_scan(label)], [1, 3])


def test_body_mask_fills_holes_and_keeps_the_largest_component():
    image = np.zeros((20, 20))
    image[2:15, 2:15] = 0.5
    image[6:9, 6:9] = 0.0  # a hole (e.g. air in the bowel): filled
    image[17:19, 17:19] = 0.5  # a small separate blob (table): dropped
    mask = body_mask(image)
    assert mask[6:9, 6:9].all() and not mask[17:19, 17:19].any() and mask.sum() == 13 * 13


def test_superpixels_are_felzenszwalb_inside_the_body_only():
    from skimage.segmentation import felzenszwalb

    image = np.zeros((32, 32))
    image[4:28, 4:28] = 0.4
    image[4:28, 16:28] = 0.9
    sp = slice_superpixels(image, min_size=10)
    assert (sp[body_mask(image) == 0] == 0).all() and sp[4:28, 4:28].min() >= 1
    reference = felzenszwalb(image, scale=1.0, sigma=1.0, min_size=10)
    inside = body_mask(image)
    # same partition inside the body (ids relabelled)
    pairs = set(zip(sp[inside].tolist(), reference[inside].tolist(), strict=True))
    assert len(pairs) == len(np.unique(sp[inside])) == len(np.unique(reference[inside]))


def test_ct_window_and_mr_percentile():
    ct = np.array([-1000.0, -125.0, 75.0, 275.0, 1000.0])
    np.testing.assert_allclose(preprocess_intensity(ct, "ct"), [0, 0, 0.5, 1, 1])
    mr = np.arange(1000.0)
    out = preprocess_intensity(mr, "mr")
    assert out.min() == 0 and out.max() == 1 and out[-1] == 1 and 0 < out[500] < 1
    with pytest.raises(MedzooDataError, match="modality"):
        preprocess_intensity(ct, "pet")


def _write_case(folder, name, volume, label):
    write_volume(folder / f"{name}", volume.astype(np.int16), np.diag([1.5, 1.5, 2.0, 1.0]))
    return label


def test_layouts_alpnet_btcv_msd_and_auto(tmp_path):
    volume = np.full((8, 8, 6), -1000.0)
    volume[2:6, 2:6] = 40
    label = np.zeros((8, 8, 6), dtype=np.uint8)
    label[3:5, 3:5, 2:4] = 1
    alpnet = tmp_path / "alpnet"
    for i in (1, 10, 2):
        write_volume(alpnet / f"image_{i}.nii.gz", volume.astype(np.int16), np.eye(4))
        write_volume(alpnet / f"label_{i}.nii.gz", label, np.eye(4))
    write_volume(alpnet / "superpix-MIDDLE_1.nii.gz", label.astype(np.int32), np.eye(4))
    scans = find_scans(alpnet)
    assert [s.scan_id for s in scans] == ["1", "2", "10"]  # natural order, as the reference's scan ids
    assert scans[0].superpixels is not None and scans[1].superpixels is None
    btcv = tmp_path / "btcv"
    write_volume(btcv / "img" / "img0001.nii.gz", volume.astype(np.int16), np.eye(4))
    write_volume(btcv / "label" / "label0001.nii.gz", label, np.eye(4))
    (scan,) = find_scans(btcv, "btcv", need_labels=True)
    assert scan.scan_id == "0001" and scan.label.name == "label0001.nii.gz"
    msd = tmp_path / "msd"
    write_volume(msd / "imagesTr" / "a.nii.gz", volume.astype(np.int16), np.eye(4))
    (msd / "dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/a.nii.gz"}]}))
    with pytest.raises(MedzooDataError, match="without labels"):
        find_scans(msd, need_labels=True)
    with pytest.raises(MedzooDataError, match="no scans"):
        find_scans(tmp_path / "btcv", "alpnet")
    with pytest.raises(MedzooDataError, match="layout"):
        find_scans(msd, "nnunet")
    loaded = load_scan(scans[0], "ct", 16)
    assert loaded.image.shape == (6, 16, 16) and loaded.label.shape == (6, 16, 16)
    assert set(np.unique(loaded.superpixels)) == {0, 1}  # read from the file, not recomputed


def test_a_volume_with_no_foreground_is_an_error(tmp_path):
    air = np.full((8, 8, 4), -1000, dtype=np.int16)
    write_volume(tmp_path / "image_0.nii.gz", air, np.eye(4))
    (scan,) = find_scans(tmp_path)
    with pytest.raises(MedzooDataError, match="no foreground"):
        load_scan(scan, "ct", 16)


def test_search_groups_are_one_crop_per_scan_per_relative_position():
    label = np.zeros((16, 16, 16), dtype=np.int64)
    scans = [_scan(label, str(i), i) for i in range(3)]
    groups = search_groups(scans, n_bins=4, crop_size=8)
    assert len(groups) == 4 and all(len(g) == 3 for g in groups)
    assert all(c.shape == (8, 8) and c.min() >= 0 and c.max() <= 1 for g in groups for c in g)


@pytest.mark.parametrize(
    ("image", "label", "modality"),
    [
        ("example_ct_sm.nii.gz", "example_seg.nii.gz", "ct"),
        ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "mr"),
    ],
)
def test_real_scans_load_with_their_organs(totalseg, image, label, modality):
    from fewshot_augsearch.data import ScanFiles

    scan = load_scan(ScanFiles("x", totalseg / image, totalseg / label), modality, 64, {"min_size": 25})
    assert scan.image.shape[1:] == (64, 64) and scan.image.min() >= 0 and scan.image.max() <= 1
    z0, z1 = organ_z_range(scan.label, 5)  # liver in TotalSegmentator's maps
    assert 0 <= z0 <= z1 < len(scan.image)
    assert scan.superpixels.max() >= 2
    assert all(
        (sp[~body_mask(image)] == 0).all() for sp, image in zip(scan.superpixels, scan.image, strict=True)
    )
