"""CT pipeline: real CT through the transforms, dataset layouts, bad inputs."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from hyspark.data import CTDataModule, CTDataset, find_cases, preprocess_transforms, training_transforms
from medzoo.errors import MedzooDataError


def _write_ct(path, array, spacing=(2.0, 2.0, 2.0)):
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([*spacing, 1.0])), str(path))
    return path


def _ct_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000, dtype=np.int16)  # air
    body = tuple(slice(s // 4, s - s // 4) for s in shape)
    array[body] = rng.integers(-100, 300, size=array[body].shape)
    return array


def test_real_ct_gets_paper_spacing_orientation_and_range(ct_data_dir):
    path = ct_data_dir / "example_ct_sm.nii.gz"
    source = nib.load(str(path))
    data = preprocess_transforms(("image",))[0]({"image": str(path)})
    for transform in preprocess_transforms(("image",))[1:]:
        data = transform(data)
    image = data["image"]
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(image.pixdim.numpy(), [1.5, 1.5, 1.5], rtol=1e-5)
    # 3 mm -> 1.5 mm doubles the voxel count along each axis (to within one voxel).
    expected = np.asarray(source.shape) * np.asarray(source.header.get_zooms()[:3]) / 1.5
    assert np.all(np.abs(np.asarray(image.shape[1:]) - expected) <= 1)
    values = image.as_tensor()
    assert values.min().item() == 0.0 and values.max().item() == 1.0  # air and bone saturate the window
    raw = np.asarray(source.dataobj, dtype=np.float32)
    assert ((raw > -175) & (raw < 250)).mean() > 0.05  # real soft tissue is inside the window


def test_tiny_pretraining_fit_on_real_ct(ct_data_dir, tmp_path):
    import pytorch_lightning as pl

    from hyspark.module import HySparKPretrainModule

    path = str((ct_data_dir / "example_ct_sm.nii.gz").resolve())
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": path}, {"image": path}]}))
    data = CTDataModule(str(tmp_path), crop_size=32, crops_per_volume=2, crop_sampling="uniform")
    module = HySparKPretrainModule("tiny", backend="dense")
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, data)
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32, 32)
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    assert np.isfinite(trainer.callback_metrics["train/loss"].item())
    assert np.isfinite(trainer.callback_metrics["val/loss"].item())


def test_layouts_msd_nnunet_and_plain_folder(tmp_path):
    msd = tmp_path / "msd"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    for name in ("a", "b"):
        _write_ct(msd / "imagesTr" / f"{name}.nii.gz", _ct_like((8, 8, 8)))
        _write_ct(msd / "labelsTr" / f"{name}.nii.gz", np.zeros((8, 8, 8), np.uint8))
    (msd / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]})
    )
    assert find_cases(msd, need_labels=True) == [
        {"image": str(msd / "imagesTr/a.nii.gz"), "label": str(msd / "labelsTr/a.nii.gz")}
    ]
    nnunet = tmp_path / "nnunet"
    (nnunet / "imagesTr").mkdir(parents=True)
    (nnunet / "labelsTr").mkdir()
    _write_ct(nnunet / "imagesTr" / "case_0000.nii.gz", _ct_like((8, 8, 8)))
    _write_ct(nnunet / "labelsTr" / "case.nii.gz", np.zeros((8, 8, 8), np.uint8))
    assert find_cases(nnunet, need_labels=True)[0]["label"] == str(nnunet / "labelsTr" / "case.nii.gz")
    plain = tmp_path / "plain" / "sub"
    plain.mkdir(parents=True)
    _write_ct(plain / "x.nii", _ct_like((8, 8, 8)))
    (plain / "notes.txt").write_text("not an image")
    assert find_cases(tmp_path / "plain") == [{"image": str(plain / "x.nii")}]
    with pytest.raises(MedzooDataError, match="without labels"):
        find_cases(tmp_path / "plain", need_labels=True)
    with pytest.raises(MedzooDataError, match="no such folder"):
        find_cases(tmp_path / "missing")


def _dataset(path, crop=32, **kwargs):
    augment = training_transforms(("image",), crop_size=crop, crops_per_volume=2, crop_sampling="uniform")
    return CTDataset([{"image": str(path)}], preprocess_transforms(("image",), **kwargs), augment)


def test_volume_smaller_than_crop_is_padded(tmp_path):
    path = _write_ct(tmp_path / "small.nii.gz", _ct_like((12, 10, 8)), spacing=(1.5, 1.5, 1.5))
    crops = _dataset(path)[0]
    assert len(crops) == 2
    for crop in crops:
        assert crop["image"].shape == (1, 32, 32, 32)
        assert crop["image"].max() > 0  # the body is inside the padded crop


def test_nan_voxels_are_rejected_with_the_path(tmp_path):
    array = _ct_like((16, 16, 16)).astype(np.float32)
    array[3, 4, 5] = np.nan
    path = _write_ct(tmp_path / "nan.nii.gz", array)
    with pytest.raises(MedzooDataError, match=r"nan\.nii\.gz"):
        _dataset(path)[0]


def test_2d_images_are_rejected(tmp_path):
    png = tmp_path / "slice.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png)
    with pytest.raises(MedzooDataError, match=r"slice\.png"):
        _dataset(png)[0]
    flat = _write_ct(tmp_path / "flat.nii.gz", _ct_like((16, 16, 1)))
    with pytest.raises(MedzooDataError, match=r"flat\.nii\.gz"):
        _dataset(flat)[0]


def test_non_ct_files_are_rejected(tmp_path, ct_data_dir):
    fake = tmp_path / "report.nii.gz"
    fake.write_text("this is not a volume")
    with pytest.raises(MedzooDataError, match=r"report\.nii\.gz"):
        _dataset(fake)[0]
    # A real MR volume is not in Hounsfield units: no air below -500.
    with pytest.raises(MedzooDataError, match="Hounsfield"):
        _dataset(ct_data_dir / "example_mr_sm.nii.gz")[0]
    # ...unless the user opts out.
    assert _dataset(ct_data_dir / "example_mr_sm.nii.gz", check_hu=False)[0][0]["image"].shape == (
        1,
        32,
        32,
        32,
    )


def test_segmentation_crops_keep_labels_aligned(tmp_path):
    image = _ct_like((24, 24, 24))
    label = (image > 0).astype(np.uint8)
    root = tmp_path / "seg"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    _write_ct(root / "imagesTr" / "c.nii.gz", image, spacing=(1.5, 1.5, 1.5))
    _write_ct(root / "labelsTr" / "c.nii.gz", label, spacing=(1.5, 1.5, 1.5))
    data = CTDataModule(str(root), task="segment", crop_size=16, crops_per_volume=3, val_fraction=0.0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == batch["label"].shape == (3, 1, 16, 16, 16)
    # Labels were resampled with nearest neighbour and follow the image: label 1 exactly where HU > 0.
    hu_positive = batch["image"] > (175 / 425)
    assert torch.equal(batch["label"].bool(), hu_positive)


def test_persistent_cache_stores_the_preprocessing(tmp_path):
    path = _write_ct(tmp_path / "vol.nii.gz", _ct_like((20, 20, 20)), spacing=(1.5, 1.5, 1.5))
    augment = training_transforms(("image",), crop_size=16, crops_per_volume=1, crop_sampling="uniform")
    cache = tmp_path / "cache"
    dataset = CTDataset([{"image": str(path)}], preprocess_transforms(("image",)), augment, str(cache))
    first = dataset[0][0]["image"]
    assert first.shape == (1, 16, 16, 16)
    assert len(list(cache.glob("*.pt"))) == 1  # the deterministic part, written once
    assert dataset[0][0]["image"].shape == (1, 16, 16, 16)  # served from the cache
    # Known answer: the cached preprocessing equals the uncached one, and is served without the source file.
    uncached = CTDataset([{"image": str(path)}], preprocess_transforms(("image",)), [], None)[0]["image"]
    cached = CTDataset([{"image": str(path)}], preprocess_transforms(("image",)), [], str(tmp_path / "c2"))
    torch.testing.assert_close(torch.as_tensor(cached[0]["image"]), torch.as_tensor(uncached))
    path.unlink()
    torch.testing.assert_close(torch.as_tensor(cached[0]["image"]), torch.as_tensor(uncached))


def test_posneg_crops_centre_on_foreground_as_the_reference(tmp_path):
    # Two organ blobs (HU 60) in soft background (HU -400 -> 0 after the window) inside air: with the
    # reference's pos=1, neg=0 every crop centre is a foreground voxel, though most voxels are background.
    array = np.full((40, 40, 40), -1000, dtype=np.int16)
    array[2:38, 2:38, 2:38] = -400
    array[4:12, 4:12, 4:12] = 60
    array[28:36, 28:36, 28:36] = 60
    path = _write_ct(tmp_path / "blobs.nii.gz", array, spacing=(1.5, 1.5, 1.5))
    augment = training_transforms(
        ("image",), crop_size=8, crops_per_volume=16, flip_prob=(0.0, 0.0, 0.0), crop_sampling="posneg",
        crop_pos=1.0, crop_neg=0.0,
    )  # fmt: skip
    crops = CTDataset([{"image": str(path)}], preprocess_transforms(("image",)), augment)[0]
    centres = [float(crop["image"][0, 4, 4, 4]) for crop in crops]
    assert len(centres) == 16
    assert all(c > 0 for c in centres), centres
