"""3D volumes: NIfTI (nibabel) and DICOM series folders (pydicom), with one geometry convention.

Convention (nibabel's): ``array[i, j, k]`` is the voxel at index (i, j, k) and ``affine @ (i, j, k, 1)``
is its centre in RAS+ world millimetres: +x points to the patient's Right, +y Anterior, +z Superior.
DICOM and ITK store LPS+ (+x Left, +y Posterior), so a DICOM affine is converted with
``LPS_TO_RAS @ affine_lps`` where ``LPS_TO_RAS = diag(-1, -1, 1, 1)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.io._checks import check_element_count, require_regular_file
from medzoo.io.atomic import atomic_path
from medzoo.io.images import IMAGE_SUFFIXES, check_itk_header, dicom_pixels, is_dicom_file

__all__ = ["LPS_TO_RAS", "Volume", "read_volume", "reorient_to_ras", "write_volume"]

#: Flips x and y: maps DICOM/ITK LPS+ world coordinates to NIfTI RAS+ (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass(frozen=True)
class Volume:
    """A 3D image on a voxel grid with its geometry.

    Attributes:
        array: (X, Y, Z) float32, indexed in the affine's voxel order (nibabel convention: first axis is
            the NIfTI i axis; for DICOM, i = column, j = row, k = slice along the slice normal).
        spacing: (X, Y, Z) voxel size in mm (norms of the affine's columns).
        affine: (4, 4) float64 voxel index -> RAS+ world mm (+x Right, +y Anterior, +z Superior).
        orientation: the axis codes of the affine, e.g. "RAS" or "LPS": the world direction each voxel
            axis increases towards.
        path: the file or folder it was read from.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    orientation: str
    path: Path


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the voxel axes so that they run closest to R, A, S (nibabel ``as_closest_canonical``).

    No resampling: only axis permutations and flips, so voxel values are unchanged and the world position
    of every voxel is preserved. Returns ``(array, affine)``.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    new_array = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(new_array), new_affine


def _finish(array: np.ndarray, affine: np.ndarray, path: Path, reorient: bool) -> Volume:
    import nibabel as nib

    if reorient:
        array, affine = reorient_to_ras(array, affine)
    # NaN and inf voxels are refused (a documented choice: every consumer windows or normalises intensities).
    n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    if n_nan or n_inf:
        found = ", ".join(f"{n} {kind} voxel(s)" for n, kind in ((n_nan, "NaN"), (n_inf, "inf")) if n)
        raise MedzooDataError(path, f"{found} of {array.size}", "finite voxel values")
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    # A volume without a physical voxel size cannot be resampled or measured: refused, never invented.
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise MedzooDataError(path, f"voxel spacing {spacing} mm", "positive, finite spacing in the header")
    orientation = "".join(nib.orientations.aff2axcodes(affine))
    return Volume(
        array=array.astype(np.float32, copy=False),
        spacing=spacing,
        affine=np.asarray(affine, dtype=np.float64),
        orientation=orientation,
        path=path,
    )


def read_volume(
    path: str | os.PathLike, *, reorient_to_ras: bool = False, series_uid: str | None = None
) -> Volume:
    """Read a 3D volume from a NIfTI file (.nii, .nii.gz), a folder holding one DICOM series, or MHA/NRRD.

    Args:
        path: NIfTI file; MHA/NRRD file (SimpleITK; its LPS header is converted to RAS); or DICOM
            series folder (files with or without ``.dcm``, recognised by the DICOM magic; other files
            in the folder are ignored).
        reorient_to_ras: permute/flip axes so that they are closest to RAS (see ``reorient_to_ras``).
        series_uid: for a folder with several series, the SeriesInstanceUID to read.

    A DICOM series is sorted by ImagePositionPatient projected on the slice normal (row x column
    direction cosines), MONOCHROME1 is inverted and RescaleSlope/Intercept applied per slice. The affine
    is built from ImagePositionPatient, ImageOrientationPatient and PixelSpacing in LPS and converted to
    RAS, so the same scan read from DICOM or from its NIfTI conversion gives the same geometry. The third
    affine column is the mean step between consecutive slice positions (correct for tilted stacks too).

    Raises:
        MedzooDataError: missing path, a 2D image, a 4D series, a corrupt file, NaN voxels, a folder with
            no or several DICOM series, or slices with inconsistent geometry or uneven spacing.
    """
    path = Path(path)
    if path.is_dir():
        array, affine = _read_dicom_series(path, series_uid)
        return _finish(array, affine, path, reorient_to_ras)
    if not path.exists():
        raise MedzooDataError(path, "no such file or folder", "a NIfTI file or a DICOM series folder")
    require_regular_file(path, "a NIfTI file or a DICOM series folder")
    if path.name.lower().endswith(_NIFTI_SUFFIXES):
        array, affine = _read_nifti(path)
        return _finish(array, affine, path, reorient_to_ras)
    if path.suffix.lower() in _ITK_SUFFIXES:
        array, affine = _read_itk_volume(path)
        return _finish(array, affine, path, reorient_to_ras)
    if path.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(path):
        raise MedzooDataError(
            path,
            "a 2D image file",
            "a 3D volume: a NIfTI file or a folder holding a DICOM series (use read_image for 2D)",
        )
    raise MedzooDataError(
        path,
        f"an unsupported file type {path.suffix!r}",
        "a .nii/.nii.gz file or a folder",
    )


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        image = nib.load(path)
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            image = image.slicer[..., 0]
            shape = image.shape
        if len(shape) != 3:
            kind = "a 2D image" if len(shape) < 3 else f"a {len(shape)}D image"
            raise MedzooDataError(path, f"{kind} of shape {shape}", "a 3D volume (X, Y, Z)")
        check_element_count(path, shape, "a volume")
        zooms = _raw_nifti_zooms(path, type(image.header))
        if not all(np.isfinite(z) and z > 0 for z in zooms):
            # nibabel would build an affine with a 1 mm fallback; the spacing is unknown, so refuse.
            raise MedzooDataError(
                path, f"voxel sizes (pixdim) {tuple(float(z) for z in zooms)}", "positive voxel sizes"
            )
        _check_nifti_bytes(path, image)
        array = np.asarray(image.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
        affine = np.asarray(image.affine, dtype=np.float64)
    except MedzooDataError:
        raise
    except Exception as err:  # nibabel/gzip/zlib raise many types for bad files
        raise MedzooDataError(
            path, f"a corrupt or truncated NIfTI file ({type(err).__name__}: {err})", "a valid NIfTI file"
        ) from err
    return array, affine


def _raw_nifti_zooms(path: Path, header_class) -> tuple[float, ...]:
    """The voxel sizes as the file states them: nibabel's load replaces a zero pixdim with 1 mm."""
    import gzip
    import io

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(header_class.template_dtype.itemsize)
    header = header_class.from_fileobj(io.BytesIO(raw), check=False)
    return tuple(float(z) for z in header.get_zooms()[:3])


def _check_nifti_bytes(path: Path, image) -> None:
    """The data bytes the header claims must be in the file, checked before they are allocated; for a
    .nii.gz the stream is decompressed in chunks and counted, never held."""
    import gzip

    header = image.header
    needed = int(header.get_data_offset()) + math.prod(image.shape) * header.get_data_dtype().itemsize
    if path.name.lower().endswith(".gz"):
        present = 0
        with gzip.open(path, "rb") as stream:
            while present < needed:
                chunk = stream.read(min(1 << 22, needed - present))
                if not chunk:
                    break
                present += len(chunk)
    else:
        present = path.stat().st_size
    if present < needed:
        raise MedzooDataError(
            path, f"{present:,} bytes of header and data", f"{needed:,} bytes for the shape in its header"
        )


def _read_itk_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        check_itk_header(path, 3)
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        found = f"a corrupt or unreadable {path.suffix} file"
        raise MedzooDataError(path, found, "a valid MHA/NRRD volume") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MedzooDataError(
            path,
            f"a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} component(s)",
            "a 3D single-component volume (use read_image for 2D)",
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # numpy (z, y, x) -> voxel order (i, j, k)
    affine_lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine_lps[:3, 3] = image.GetOrigin()
    return np.asarray(array, dtype=np.float32), LPS_TO_RAS @ affine_lps


def _read_dicom_series(folder: Path, series_uid: str | None) -> tuple[np.ndarray, np.ndarray]:
    import pydicom

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    datasets = []
    for file in files:
        if not (file.suffix.lower() == ".dcm" or is_dicom_file(file)):
            continue
        try:
            ds = pydicom.dcmread(file)
        except Exception as err:
            raise MedzooDataError(file, f"a corrupt DICOM file ({err})", "a valid DICOM file") from err
        if "ImagePositionPatient" in ds or "PixelData" in ds:
            datasets.append((file, ds))
    if not datasets:
        raise MedzooDataError(folder, "no DICOM image files", "a folder holding one DICOM series")

    by_series: dict[str, list] = {}
    for file, ds in datasets:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((file, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise MedzooDataError(folder, f"series {sorted(by_series)}", f"SeriesInstanceUID {series_uid}")
        datasets = by_series[series_uid]
    elif len(by_series) > 1:
        raise MedzooDataError(
            folder, f"{len(by_series)} DICOM series {sorted(by_series)}", "one series (or pass series_uid)"
        )
    if len(datasets) < 2:
        raise MedzooDataError(
            folder, f"{len(datasets)} DICOM slice", "at least 2 slices of a 3D series (use read_image for 2D)"
        )
    return _stack_series(folder, datasets)


def _geometry(file: Path, ds) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Row cosine, column cosine, position (LPS) and (row, col) spacing of one slice."""
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if ds.get(keyword) is None:
            raise MedzooDataError(file, f"no {keyword}", f"{keyword} on every slice of a DICOM series")
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    return orientation[:3], orientation[3:], position, spacing


def _stack_series(folder: Path, datasets: list) -> tuple[np.ndarray, np.ndarray]:
    file0, ds0 = datasets[0]
    row_cos, col_cos, _, pixel_spacing = _geometry(file0, ds0)
    normal = np.cross(row_cos, col_cos)
    slices = []
    for file, ds in datasets:
        r, c, position, spacing = _geometry(file, ds)
        if not (np.allclose(r, row_cos, atol=1e-4) and np.allclose(c, col_cos, atol=1e-4)):
            raise MedzooDataError(
                file,
                f"ImageOrientationPatient {[*r, *c]}",
                f"{[*row_cos, *col_cos]} as in {file0.name}",
            )
        if not np.allclose(spacing, pixel_spacing, rtol=1e-4):
            raise MedzooDataError(file, f"PixelSpacing {spacing}", f"{pixel_spacing} as in {file0.name}")
        slices.append((float(position @ normal), position, file, ds))
    slices.sort(key=lambda item: item[0])

    depths = np.array([s[0] for s in slices])
    steps = np.diff(depths)
    if np.any(steps < 1e-3):
        duplicate = slices[int(np.argmin(steps)) + 1][2]
        raise MedzooDataError(duplicate, "two slices at the same position", "one slice per position")
    if not np.allclose(steps, steps.mean(), rtol=1e-2, atol=1e-3):
        raise MedzooDataError(
            folder, f"uneven slice spacing (steps {np.round(steps, 3).tolist()} mm)", "evenly spaced slices"
        )

    planes = []
    for _, _, file, ds in slices:
        pixels = dicom_pixels(ds, file)
        if pixels.ndim != 2 or pixels.shape != (int(ds0.Rows), int(ds0.Columns)):
            raise MedzooDataError(
                file,
                f"pixels of shape {pixels.shape}",
                f"({ds0.Rows}, {ds0.Columns}) grey",
            )
        planes.append(pixels.T)  # (rows, cols) -> (i = column, j = row)
    array = np.stack(planes, axis=-1).astype(np.float32)

    first, last = slices[0][1], slices[-1][1]
    affine_lps = np.eye(4)
    # PixelSpacing is (between rows, between columns): the column index i moves along the row cosine by
    # the column spacing, the row index j along the column cosine by the row spacing.
    affine_lps[:3, 0] = row_cos * pixel_spacing[1]
    affine_lps[:3, 1] = col_cos * pixel_spacing[0]
    affine_lps[:3, 2] = (last - first) / (len(slices) - 1)
    affine_lps[:3, 3] = first
    return array, LPS_TO_RAS @ affine_lps


def write_volume(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3D array as NIfTI (``.nii`` or ``.nii.gz``), atomically.

    Args:
        path: destination; must end in ``.nii`` or ``.nii.gz`` (compression follows the suffix).
        array: (X, Y, Z) in any numeric dtype nibabel stores (float32, int16, uint8, ...); bool is
            stored as uint8. The dtype is kept, so label maps stay integers.
        affine: (4, 4) voxel -> RAS+ world mm; written as both qform and sform (code "scanner").
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith(_NIFTI_SUFFIXES):
        raise MedzooDataError(path, f"suffix {path.suffix!r}", "a NIfTI path ending in .nii or .nii.gz")
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise MedzooDataError(path, f"an affine of shape {affine.shape}", "a (4, 4) affine")
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path
