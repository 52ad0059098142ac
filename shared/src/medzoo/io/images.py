"""2D image reading: PNG/JPEG/BMP/TIFF (Pillow), DICOM (pydicom) and MHA/NRRD (SimpleITK)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medzoo.errors import MedzooDataError
from medzoo.io._checks import check_element_count, is_regular_file, require_regular_file

__all__ = ["IMAGE_SUFFIXES", "Image2D", "is_dicom_file", "list_images", "read_image"]

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
_DICOM_SUFFIXES = (".dcm", ".dicom")
# File suffixes that `list_images` picks up as 2D images (MHA/NRRD are left out: they often hold volumes).
IMAGE_SUFFIXES = _PIL_SUFFIXES + _DICOM_SUFFIXES


@dataclass(frozen=True)
class Image2D:
    """A 2D image with its physical pixel size.

    Attributes:
        array: (H, W) grey or (H, W, C) colour, in the file's native dtype (uint8, uint16, ...), except DICOM
            with a RescaleSlope/RescaleIntercept, which is float32 in the modality's units (e.g. HU).
            Row 0 is the top of the image; a landmark (x, y) indexes ``array[y, x]``.
        spacing: (row, col) mm per pixel, i.e. the distance between rows and between columns, in the
            array's axis order (as ``hd95`` takes it); ``None`` means UNKNOWN (PNG/JPEG/BMP/TIFF never claim
            a spacing: their DPI tags are not physical). ``spacing_xy`` gives the (x, y) order of landmark
            coordinates and landmark metrics; ``row_mm`` / ``col_mm`` name each one.
        path: the file it was read from.
    """

    array: np.ndarray
    spacing: tuple[float, float] | None
    path: Path

    @property
    def row_mm(self) -> float | None:
        """mm between rows (along y), or None when unknown."""
        return None if self.spacing is None else self.spacing[0]

    @property
    def col_mm(self) -> float | None:
        """mm between columns (along x), or None when unknown."""
        return None if self.spacing is None else self.spacing[1]

    @property
    def spacing_xy(self) -> tuple[float, float] | None:
        """``(x, y)`` = ``(col_mm, row_mm)``: the order of landmark coordinates and of
        ``medzoo.metrics.radial_errors(spacing=...)``, so that no caller flips ``spacing`` by hand."""
        return None if self.spacing is None else (self.spacing[1], self.spacing[0])


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The 2D image files (suffix in :data:`IMAGE_SUFFIXES`, any case) in ``folder``, sorted by path.

    Args:
        folder: the folder to list.
        recursive: also list sub-folders.

    Raises:
        MedzooDataError: the folder does not exist or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MedzooDataError(folder, "no such folder", "a folder of images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise MedzooDataError(folder, "no image files", f"images with a suffix in {IMAGE_SUFFIXES}")
    return images


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file with the DICOM Part 10 magic (``DICM`` after the 128-byte preamble)."""
    if not is_regular_file(path):  # never open a FIFO or a device: it could block
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_image(path: str | os.PathLike) -> Image2D:
    """Read a 2D image: PNG, JPEG, BMP, TIFF (8/16 bit), DICOM (.dcm or DICOM magic) or MHA/NRRD.

    DICOM: MONOCHROME1 is inverted so that larger values are brighter (as MONOCHROME2), then
    RescaleSlope/RescaleIntercept are applied (result float32); spacing comes from PixelSpacing, else
    ImagerPixelSpacing (the detector plane, not corrected for magnification), else unknown.
    MHA/NRRD: spacing from the header. Other formats: spacing unknown (``None``).

    Raises:
        MedzooDataError: missing, truncated, corrupt or non-image file, DICOM without pixel data,
            multi-frame or 3D data (use ``read_volume``).
    """
    path = Path(path)
    if require_regular_file(path, "an image file") == 0:
        raise MedzooDataError(path, "an empty file", "an image file")
    suffix = path.suffix.lower()
    if suffix in _DICOM_SUFFIXES or is_dicom_file(path):
        return _read_dicom_image(path)
    if suffix in _ITK_SUFFIXES:
        return _read_itk_image(path)
    return _read_pil_image(path)


def _read_pil_image(path: Path) -> Image2D:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                # Everything below is read from the header, before any pixel is decoded.
                check_element_count(path, (image.height, image.width, len(image.getbands())), "an image")
                _refuse_lossy_modes(image, path)
                image.load()  # decode now so that truncation surfaces here, not later
                array = _pil_to_array(image)
    except MedzooDataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise MedzooDataError(path, f"a decompression bomb ({err})", "an image of a sane size") from err
    except UnidentifiedImageError as err:
        raise MedzooDataError(
            path, "a file that is not a readable image", "PNG, JPEG, BMP, TIFF, DICOM, MHA or NRRD"
        ) from err
    except (OSError, SyntaxError, ValueError, MemoryError) as err:
        raise MedzooDataError(path, f"a corrupt or truncated image ({err})", "a complete image file") from err
    return Image2D(array=array, spacing=None, path=path)


def _refuse_lossy_modes(image, path: Path) -> None:
    """Refuse what Pillow would silently read as something else: multi-page files (only page 1 would be
    read) and 16-bit-per-channel colour (Pillow keeps only the high bytes)."""
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        raise MedzooDataError(
            path, f"a multi-page {image.format} file with {frames} pages", "a single 2D image (one page)"
        )
    if image.format == "PNG":
        with open(path, "rb") as handle:
            header = handle.read(33)
        bit_depth, colour_type = header[24], header[25]  # IHDR follows the 8-byte signature
        if bit_depth == 16 and colour_type in (2, 4, 6):
            raise MedzooDataError(
                path,
                "a 16-bit-per-channel colour PNG (Pillow would keep only the high bytes)",
                "an 8-bit colour or a 16-bit grey PNG; convert colour to grey or to 8 bits first",
            )
    if image.format == "TIFF":
        bits = image.tag_v2.get(258)  # BitsPerSample
        samples = int(image.tag_v2.get(277, 1))  # SamplesPerPixel
        depth = max(bits) if isinstance(bits, tuple) else int(bits or 8)
        if samples > 1 and depth > 8:
            raise MedzooDataError(
                path,
                f"a {depth}-bit-per-channel colour TIFF ({samples} samples)",
                "8-bit colour or 16-bit grey; convert colour to grey or to 8 bits first",
            )


def _pil_to_array(image) -> np.ndarray:
    """Convert a Pillow image to (H, W) or (H, W, C) in its native bit depth."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA", "I;16", "F", "LA"):
        return np.asarray(image).copy()
    if mode in ("I;16B", "I;16L", "I;16N"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        array = np.asarray(image)
        # Some 16-bit files decode to 32-bit "I"; keep uint16 when the values fit.
        if array.size and array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max:
            return array.astype(np.uint16)
        return array.copy()
    if mode == "1":
        return np.asarray(image.convert("L")).copy()
    if mode == "P":
        if "transparency" in image.info:
            return np.asarray(image.convert("RGBA")).copy()
        rgb = np.asarray(image.convert("RGB"))
        # Palette files with a grey palette (common for 8-bit BMP) are grey images.
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].copy()
        return rgb.copy()
    return np.asarray(image.convert("RGB")).copy()  # CMYK, YCbCr, LAB, ...


def _dicom_spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            spacing = (float(value[0]), float(value[1]))
            if all(np.isfinite(s) and s > 0 for s in spacing):
                return spacing
    return None


def dicom_pixels(ds, path: Path) -> np.ndarray:
    """Pixel data of one DICOM dataset: MONOCHROME1 inverted, then rescaled (float32) if tagged.

    MONOCHROME1 inversion maps stored value s to ``min + max - s`` over the stored range given by
    BitsStored and PixelRepresentation, which is the standard inversion and keeps the dtype. Applying it
    before the linear rescale is equivalent to inverting the rescaled range.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise MedzooDataError(path, "a DICOM file without pixel data", "a DICOM image with PixelData")
    try:
        array = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad/unsupported pixel data
        raise MedzooDataError(
            path, f"DICOM pixel data that cannot be decoded ({type(err).__name__}: {err})", "decodable pixels"
        ) from err
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        bits = int(ds.get("BitsStored", array.dtype.itemsize * 8))
        if int(ds.get("PixelRepresentation", 0)) == 1:
            low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            low, high = 0, 2**bits - 1
        array = (low + high - array.astype(np.int64)).astype(array.dtype)
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    if slope is not None or intercept is not None:
        slope = 1.0 if slope is None else float(slope)
        intercept = 0.0 if intercept is None else float(intercept)
        array = (array.astype(np.float64) * slope + intercept).astype(np.float32)
    return array


def _read_dicom_image(path: Path) -> Image2D:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise MedzooDataError(
            path,
            f"a corrupt or truncated DICOM file ({err})",
            "a valid DICOM file",
        ) from err
    array = dicom_pixels(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames > 1 or array.ndim > (3 if samples > 1 else 2):
        raise MedzooDataError(
            path, f"a multi-frame DICOM of shape {array.shape}", "a single 2D frame (use read_volume for 3D)"
        )
    return Image2D(array=array, spacing=_dicom_spacing(ds), path=path)


def check_itk_header(path: Path, min_dimension: int) -> None:
    """Read only an MHA/NRRD header: refuse absurd sizes before the pixels are allocated, and a zero or
    negative spacing (unknown, never invented)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # raises RuntimeError for a corrupt header
    size = reader.GetSize()
    check_element_count(path, (*size, reader.GetNumberOfComponents()), "an image")
    spacing = reader.GetSpacing()[: max(min_dimension, len(size))]
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise MedzooDataError(path, f"spacing {tuple(spacing)} in the header", "positive spacing")


def _read_itk_image(path: Path) -> Image2D:
    import SimpleITK as sitk

    try:
        check_itk_header(path, 2)
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise MedzooDataError(
            path,
            f"a corrupt or unreadable {path.suffix} file",
            "a valid MHA/NRRD image",
        ) from err
    size = image.GetSize()  # (x, y[, z]) ITK order
    if len(size) == 3 and size[2] == 1:
        image = image[:, :, 0]
        size = size[:2]
    if len(size) != 2:
        raise MedzooDataError(
            path,
            f"an image of size {size} (x, y, z)",
            "a 2D image (use read_volume for 3D)",
        )
    array = sitk.GetArrayFromImage(image)  # (H, W) or (H, W, C): numpy order is reversed ITK order
    spacing_x, spacing_y = image.GetSpacing()
    return Image2D(array=array, spacing=(float(spacing_y), float(spacing_x)), path=path)
