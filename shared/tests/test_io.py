"""medzoo.io image/volume readers and atomic writers, checked against the libraries they wrap."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path as nibabel_data_path
from PIL import Image
from pydicom.data import get_testdata_file

from medzoo.errors import MedzooDataError
from medzoo.io import (
    LPS_TO_RAS,
    atomic_write,
    read_image,
    read_volume,
    write_csv,
    write_json,
    write_png,
    write_text,
    write_volume,
)

# ------------------------------------------------------------------------------------------- 2D images


def test_ct_small_applies_rescale_and_pixel_spacing():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, expected.astype(np.float32))
    assert image.spacing == pytest.approx((0.661468, 0.661468))
    assert image.array.min() < -500  # HU: air/fat below zero after the -1024 intercept


def test_mr_small_keeps_native_dtype_without_rescale_tags():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert "RescaleSlope" not in ds
    assert image.array.dtype == ds.pixel_array.dtype
    np.testing.assert_array_equal(image.array, ds.pixel_array)
    assert image.spacing == pytest.approx((0.3125, 0.3125))


def _monochrome1_file() -> str:
    for path in pydicom.data.get_testdata_files("dicomdirtests/*/CR*/*"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            return path
    pytest.skip("this pydicom release ships no MONOCHROME1 test file")


def test_monochrome1_is_inverted_then_rescaled_with_imager_pixel_spacing():
    path = _monochrome1_file()
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64)
    image = read_image(path)
    top = 2 ** int(ds.BitsStored) - 1
    expected = (top - raw) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(image.array, expected, rtol=1e-6)
    # Inversion: the brightest output pixel is the smallest stored value.
    assert np.unravel_index(image.array.argmax(), raw.shape) == np.unravel_index(raw.argmin(), raw.shape)
    assert "PixelSpacing" not in ds
    assert image.spacing == pytest.approx(tuple(float(v) for v in ds.ImagerPixelSpacing))


def test_dicom_without_suffix_is_found_by_magic(tmp_path):
    target = tmp_path / "IM0001"
    shutil.copy(get_testdata_file("CT_small.dcm"), target)
    assert read_image(target).array.shape == (128, 128)


def test_dicom_spacing_unknown_when_absent(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm")
    assert read_image(tmp_path / "nospacing.dcm").spacing is None


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint16)])
def test_grey_round_trip_is_exact(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, size=(37, 53), endpoint=True).astype(dtype)
    path = tmp_path / f"grey{suffix}"
    if suffix == ".png":
        write_png(path, array)
    else:
        Image.fromarray(array).save(path)
    image = read_image(path)
    assert image.array.dtype == dtype
    assert image.spacing is None
    np.testing.assert_array_equal(image.array, array)


def test_rgb_png_bmp_and_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png").array, rgb)
    grey = rng.integers(0, 255, size=(20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.bmp").array, grey)
    smooth = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (20, 1))
    Image.fromarray(smooth).save(tmp_path / "grey.jpg", quality=95)
    decoded = read_image(tmp_path / "grey.jpg").array
    assert decoded.shape == (20, 30) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - smooth).max() <= 8  # lossy, but close


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats_take_spacing_from_header(tmp_path, suffix):
    array = np.arange(6 * 9, dtype=np.int16).reshape(6, 9)  # (H, W)
    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing((0.5, 0.25))  # ITK order: (x = between columns, y = between rows)
    sitk.WriteImage(itk, str(tmp_path / f"image{suffix}"))
    image = read_image(tmp_path / f"image{suffix}")
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing == (0.25, 0.5)  # (row, col)


def test_write_png_rejects_unsupported_arrays(tmp_path):
    with pytest.raises(MedzooDataError, match="float64"):
        write_png(tmp_path / "x.png", np.zeros((4, 4)))
    with pytest.raises(MedzooDataError, match=r"\(2, 3, 4, 5\)"):
        write_png(tmp_path / "x.png", np.zeros((2, 3, 4, 5), np.uint8))
    assert not list(tmp_path.iterdir())


def test_shenzhen_pngs_match_cases_table(shared_data):
    folder = shared_data / "chest-shenzhen"
    cases = pd.read_csv(folder / "cases.csv")
    assert len(cases) == 11
    for row in cases.itertuples():
        image = read_image(folder / "images" / row.image)
        assert image.array.dtype == np.uint8
        assert image.array.shape == (row.height, row.width)
        assert image.spacing is None  # documented as unknown for these downsampled PNGs


def test_nih_images_and_label_table(shared_data):
    folder = shared_data / "cxr-nih"
    table = pd.read_csv(folder / "metadata" / "Data_Entry_2017_v2020.csv.gz")
    assert len(table) == 112_120
    labels = table.set_index("Image Index")["Finding Labels"]
    assert labels["00000001_000.png"] == "Cardiomegaly"
    assert labels["00027426_000.png"] == "No Finding"
    for name in ("00000001_000.png", "00027426_000.png"):
        image = read_image(folder / "images" / name)
        assert image.array.shape == (512, 512) and image.array.dtype == np.uint8
        assert image.array.std() > 10  # a real radiograph, not a blank


# ------------------------------------------------------------------------------------ bad 2D input


def test_truncated_png_names_the_file(tmp_path):
    write_png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    message = re.escape("cut.png: found a corrupt or truncated image")
    with pytest.raises(MedzooDataError, match=message) as info:
        read_image(tmp_path / "cut.png")
    assert info.value.__cause__ is not None  # re-raised from the library error


@pytest.mark.parametrize("name", ["notes.png", "notes.txt", "notes.jpg"])
def test_non_image_file(tmp_path, name):
    (tmp_path / name).write_text("patient list, not an image\n")
    with pytest.raises(MedzooDataError, match=f"{name}: found a file that is not a readable image"):
        read_image(tmp_path / name)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MedzooDataError, match="no such file"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(MedzooDataError, match="found a folder"):
        read_image(tmp_path)


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "header_only.dcm")
    message = re.escape("header_only.dcm: found a DICOM file without pixel data")
    with pytest.raises(MedzooDataError, match=message):
        read_image(tmp_path / "header_only.dcm")


def test_corrupt_dicom(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    with pytest.raises(MedzooDataError, match=re.escape("bad.dcm: found")):
        read_image(tmp_path / "bad.dcm")
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 4000])  # pixel data cut short
    with pytest.raises(MedzooDataError, match=re.escape("cut.dcm: found")):
        read_image(tmp_path / "cut.dcm")


def test_3d_mha_given_to_read_image(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16)), str(tmp_path / "vol.mha"))
    with pytest.raises(MedzooDataError, match="use read_volume"):
        read_image(tmp_path / "vol.mha")


# ---------------------------------------------------------------------------------------------- volumes


def test_nibabel_anatomical_matches_nibabel():
    path = Path(nibabel_data_path) / "anatomical.nii"
    reference = nib.load(path)
    volume = read_volume(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(volume.affine, reference.affine)
    np.testing.assert_allclose(volume.spacing, reference.header.get_zooms()[:3], rtol=1e-6)
    assert volume.orientation == "".join(nib.aff2axcodes(reference.affine))


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def test_reorient_to_ras_matches_as_closest_canonical_and_keeps_world_positions(shared_data):
    path = shared_data / "ct-totalsegmentator" / "example_mr_sm.nii.gz"
    native = read_volume(path)
    assert native.orientation == "LPS"
    ras = read_volume(path, reorient_to_ras=True)
    canonical = nib.as_closest_canonical(nib.load(path))
    assert ras.orientation == "RAS"
    np.testing.assert_array_equal(ras.array, canonical.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(ras.affine, canonical.affine)
    # The same voxel value sits at the same world position before and after reorientation.
    shape = np.array(native.array.shape)
    i, j, k = 10, 20, 5
    flipped = (shape[0] - 1 - i, shape[1] - 1 - j, k)  # LPS -> RAS flips the first two axes
    assert native.array[i, j, k] == ras.array[flipped]
    np.testing.assert_allclose(_world(native.affine, (i, j, k)), _world(ras.affine, flipped), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "shape"), [("example_ct.nii.gz", (122, 101, 112)), ("example_ct_sm.nii.gz", (122, 101, 30))]
)
def test_totalsegmentator_ct_at_3mm(shared_data, name, shape):
    volume = read_volume(shared_data / "ct-totalsegmentator" / name)
    assert volume.array.shape == shape
    assert volume.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert volume.orientation == "RAS"
    assert volume.array.min() < -900 and volume.array.max() > 300  # HU: air and bone


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """Voxel (i, j, k) -> RAS mm from SimpleITK's LPS origin, spacing and direction."""
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ affine


@pytest.fixture(scope="module")
def dicom_series(shared_data):
    folder = shared_data / "ct-totalsegmentator" / "example_ct_dicom"
    return folder, read_volume(folder)


def test_dicom_series_geometry_matches_simpleitk(dicom_series):
    folder, volume = dicom_series
    assert volume.array.shape == (512, 512, 20)
    # 0.977 mm pixels; slices are 3 mm thick (SliceThickness) but 2 mm apart (ImagePositionPatient).
    assert volume.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert float(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SliceThickness) == 3.0
    assert volume.orientation == "LPS"
    reference = _sitk_series(folder)
    np.testing.assert_allclose(volume.affine, _sitk_affine_ras(reference), atol=1e-6)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))


def test_dicom_series_agrees_with_its_nifti_conversion(shared_data, dicom_series):
    # TotalSegmentator wrote its segmentation of this series as NIfTI (LAS); on RAS both grids coincide.
    _, volume = dicom_series
    seg = read_volume(shared_data / "ct-totalsegmentator" / "example_seg_dicom.nii.gz", reorient_to_ras=True)
    ras = read_volume(volume.path, reorient_to_ras=True)
    assert ras.orientation == seg.orientation == "RAS"
    assert ras.array.shape == seg.array.shape
    np.testing.assert_allclose(ras.affine, seg.affine, atol=1e-3)


def test_dicom_series_order_does_not_depend_on_file_names(tmp_path, dicom_series):
    folder, volume = dicom_series
    files = sorted(folder.iterdir())
    for index, file in enumerate(reversed(files)):  # names now run against the slice order
        shutil.copy(file, tmp_path / f"{index:03d}.dcm")
    (tmp_path / "README.txt").write_text("not DICOM; ignored\n")
    copy = read_volume(tmp_path)
    np.testing.assert_array_equal(copy.array, volume.array)
    np.testing.assert_allclose(copy.affine, volume.affine)


def test_write_volume_round_trip(tmp_path, dicom_series):
    _, volume = dicom_series
    out = write_volume(tmp_path / "ct.nii.gz", volume.array, volume.affine)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)  # NIfTI stores float32
    assert back.orientation == volume.orientation
    assert back.spacing == pytest.approx(volume.spacing)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]  # no temporary left behind


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_volume_matches_the_dicom_series(tmp_path, dicom_series, suffix):
    # SimpleITK converts the series itself; our MHA/NRRD reader must land on the same RAS geometry.
    folder, volume = dicom_series
    sitk.WriteImage(_sitk_series(folder), str(tmp_path / f"ct{suffix}"))
    converted = read_volume(tmp_path / f"ct{suffix}")
    np.testing.assert_array_equal(converted.array, volume.array)
    np.testing.assert_allclose(converted.affine, volume.affine, atol=1e-6)
    assert converted.orientation == volume.orientation


def test_write_volume_keeps_integer_labels(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, size=(4, 5, 6)).astype(np.uint8)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    write_volume(tmp_path / "labels.nii", labels, affine)
    stored = nib.load(tmp_path / "labels.nii")
    assert stored.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(stored.dataobj), labels)
    assert int(stored.header["sform_code"]) == 1


# ----------------------------------------------------------------------------------- bad volume input


def test_nan_in_volume(tmp_path):
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(MedzooDataError, match=r"nan.nii.gz: found 1 NaN voxel\(s\) of 64"):
        read_volume(tmp_path / "nan.nii.gz")


def test_2d_files_given_to_read_volume(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(MedzooDataError, match=r"flat.nii: found a 2D image of shape \(8, 8\)"):
        read_volume(tmp_path / "flat.nii")
    write_png(tmp_path / "slice.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(MedzooDataError, match=re.escape("slice.png: found a 2D image file")):
        read_volume(tmp_path / "slice.png")
    with pytest.raises(MedzooDataError, match=re.escape("CT_small.dcm: found a 2D image file")):
        read_volume(get_testdata_file("CT_small.dcm"))
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "one.dcm")
    (tmp_path / "slice.png").unlink()
    with pytest.raises(MedzooDataError, match="found 1 DICOM slice"):
        read_volume(tmp_path)


def test_truncated_nifti(tmp_path):
    noise = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(noise, np.eye(4)), tmp_path / "full.nii.gz")
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(MedzooDataError, match=re.escape("cut.nii.gz: found a corrupt or truncated NIfTI")):
        read_volume(tmp_path / "cut.nii.gz")
    (tmp_path / "text.nii").write_text("not nifti")
    with pytest.raises(MedzooDataError, match=re.escape("text.nii: found a corrupt or truncated NIfTI")):
        read_volume(tmp_path / "text.nii")


def test_series_folder_problems(tmp_path, shared_data):
    with pytest.raises(MedzooDataError, match="found no DICOM image files"):
        read_volume(tmp_path)
    files = sorted((shared_data / "ct-totalsegmentator" / "example_ct_dicom").iterdir())[:3]
    for file in files:
        shutil.copy(file, tmp_path / file.name)
    ds = pydicom.dcmread(tmp_path / files[1].name)
    del ds.PixelData
    ds.save_as(tmp_path / files[1].name)
    with pytest.raises(MedzooDataError, match="without pixel data"):
        read_volume(tmp_path)
    shutil.copy(files[0], tmp_path / "duplicate")
    shutil.copy(files[1], tmp_path / files[1].name)
    with pytest.raises(MedzooDataError, match="two slices at the same position"):
        read_volume(tmp_path)


# ------------------------------------------------------------------------------------- atomic writers


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    with atomic_write(target, "wb") as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_write_json_and_csv(tmp_path):
    write_json(tmp_path / "m.json", {"mre": np.float32(1.5), "radii": np.array([2.0, 2.5]), "p": tmp_path})
    text = (tmp_path / "m.json").read_text()
    assert '"mre": 1.5' in text and str(tmp_path) in text
    with pytest.raises(ValueError):
        write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()
    frame = pd.DataFrame({"image": ["a.png", "b.png"], "x0": [1.25, 2.0]})
    write_csv(tmp_path / "t.csv", frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), frame)
    assert b"\r" not in (tmp_path / "t.csv").read_bytes()


def test_list_images_finds_image_suffixes_only(tmp_path: Path) -> None:
    from medzoo.io import list_images

    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "a.dcm", "notes.txt", "sub/c.jpg", "volume.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.dcm", "b.PNG"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.dcm", "b.PNG", "c.jpg"]
    with pytest.raises(MedzooDataError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedzooDataError, match="no image files"):
        list_images(tmp_path / "empty")


def test_image_spacing_has_named_fields_in_both_orders(tmp_path) -> None:
    from medzoo.io import Image2D

    image = Image2D(array=np.zeros((2, 3)), spacing=(0.2, 0.1), path=tmp_path / "x.dcm")
    assert (image.row_mm, image.col_mm) == (0.2, 0.1)
    assert image.spacing_xy == (0.1, 0.2)  # (x, y): the order of landmark coordinates
    unknown = Image2D(array=np.zeros((2, 3)), spacing=None, path=tmp_path / "x.png")
    assert unknown.spacing_xy is None and unknown.row_mm is None
