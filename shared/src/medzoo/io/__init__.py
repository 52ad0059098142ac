"""Medical image and annotation I/O that wraps Pillow, pydicom, nibabel and SimpleITK.

* ``read_image`` -> ``Image2D`` (2D: PNG, JPEG, BMP, TIFF, DICOM, MHA/NRRD) with spacing or ``None``.
* ``read_volume`` -> ``Volume`` (3D: NIfTI or a DICOM series folder), RAS affine; ``write_volume``.
* Landmark files (ISBI TXT, per-dataset CSV, normalised TXT, COCO keypoints), always (K, 2) (x, y) pixels.
* Atomic writers: ``atomic_write``, ``atomic_path``, ``write_json``, ``write_text``, ``write_csv``,
  ``write_png``.

Bad input raises ``medzoo.errors.MedzooDataError`` naming the path, what was found and what was expected.
"""

from medzoo.io.atomic import atomic_path, atomic_write, write_csv, write_json, write_png, write_text
from medzoo.io.display import read_grey_uint8, to_uint8
from medzoo.io.images import IMAGE_SUFFIXES, Image2D, is_dicom_file, list_images, read_image
from medzoo.io.landmarks import (
    LandmarkRecord,
    read_coco_keypoints,
    read_isbi_txt,
    read_landmark_csv,
    read_normalized_txt,
    write_coco_keypoints,
    write_isbi_txt,
    write_landmark_csv,
    write_normalized_txt,
)
from medzoo.io.tables import read_text_column
from medzoo.io.volumes import LPS_TO_RAS, Volume, read_volume, reorient_to_ras, write_volume

__all__ = [
    "IMAGE_SUFFIXES",
    "LPS_TO_RAS",
    "Image2D",
    "LandmarkRecord",
    "Volume",
    "atomic_path",
    "atomic_write",
    "is_dicom_file",
    "list_images",
    "read_coco_keypoints",
    "read_grey_uint8",
    "read_image",
    "read_isbi_txt",
    "read_landmark_csv",
    "read_normalized_txt",
    "read_text_column",
    "read_volume",
    "reorient_to_ras",
    "to_uint8",
    "write_coco_keypoints",
    "write_csv",
    "write_isbi_txt",
    "write_json",
    "write_landmark_csv",
    "write_normalized_txt",
    "write_png",
    "write_text",
    "write_volume",
]
