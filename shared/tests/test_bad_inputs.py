"""Broken and adversarial files: every reader returns exactly the file's content or raises one
MedzooDataError that names the file. Each case runs in a subprocess with a memory limit and a timeout, so a
hang or an over-allocation fails the test instead of the machine."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

MEMORY_LIMIT = 3 * 2**30  # address space of the reading process
TIMEOUT_S = 120

RUNNER = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from medzoo.errors import MedzooDataError
    import medzoo.io as io
    import nibabel, PIL.Image, pandas, pydicom, SimpleITK  # imported up front: only the read is measured
    def status_mib(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS: only the read itself is measured
    before = status_mib("VmRSS")
    try:
        result = getattr(io, sys.argv[1])(*json.loads(sys.argv[2]))
        out = {{"outcome": "returned", "repr": repr(result)[:200]}}
    except MedzooDataError as error:
        out = {{"outcome": "MedzooDataError", "message": str(error)}}
    except BaseException as error:
        out = {{"outcome": type(error).__name__, "message": str(error)[:300]}}
    out["peak_growth_mib"] = status_mib("VmHWM") - before
    print(json.dumps(out))
    """
).format(limit=MEMORY_LIMIT)


def read_in_subprocess(reader: str, *args) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, reader, json.dumps([str(a) for a in args])],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_refused(outcome: dict, path: Path, *words: str) -> None:
    assert outcome["outcome"] == "MedzooDataError", outcome
    assert str(path) in outcome["message"], outcome["message"]
    for word in words:
        assert word in outcome["message"], outcome["message"]


def _png(path: Path, width: int, height: int, bit_depth: int, colour_type: int, data: bytes) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )
    return path


# ---- files that are not regular files --------------------------------------------------------------------


@pytest.mark.parametrize("reader", ["read_image", "read_landmark_csv", "read_coco_keypoints", "read_volume"])
def test_fifo_is_refused_without_blocking(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / ("pipe.nii.gz" if reader == "read_volume" else "pipe.csv")
    os.mkfifo(fifo)
    assert_refused(read_in_subprocess(reader, fifo), fifo, "not a regular file")


def test_dev_zero_folder_and_symlink_loop_are_refused(tmp_path: Path) -> None:
    assert_refused(read_in_subprocess("read_image", "/dev/zero"), Path("/dev/zero"), "not a regular file")
    assert_refused(read_in_subprocess("read_image", tmp_path), tmp_path, "a folder")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    assert_refused(read_in_subprocess("read_image", loop), loop, "unreadable path")


# ---- images ---------------------------------------------------------------------------------------------


def test_48_bit_png_is_refused_not_truncated_to_its_high_bytes(tmp_path: Path) -> None:
    rows = b"".join(b"\x00" + np.arange(6 * 4, dtype=">u2").tobytes() for _ in range(3))
    path = _png(tmp_path / "rgb48.png", 4, 3, 16, 2, rows)
    assert_refused(read_in_subprocess("read_image", path), path, "16-bit-per-channel colour")


def test_16_bit_grey_png_is_read_exactly(tmp_path: Path) -> None:
    values = np.array([[0, 1, 256, 65535]], dtype=">u2")
    path = _png(tmp_path / "grey16.png", 4, 1, 16, 0, b"\x00" + values.tobytes())
    from medzoo.io import read_image

    np.testing.assert_array_equal(read_image(path).array, values.astype(np.uint16))


def test_multi_page_tiff_is_refused_not_read_as_page_one(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "stack.tif"
    pages = [Image.fromarray(np.full((4, 4), v, dtype=np.uint8)) for v in (1, 2)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert_refused(read_in_subprocess("read_image", path), path, "multi-page", "2 pages")


def test_header_claiming_absurd_dimensions_is_refused_before_allocation(tmp_path: Path) -> None:
    path = _png(tmp_path / "bomb.png", 100_000, 100_000, 8, 0, b"\x00" * 101)  # 10^10 pixels claimed, 1 KB
    outcome = read_in_subprocess("read_image", path)
    assert_refused(outcome, path)
    assert "MEDZOO_MAX_ELEMENTS" in outcome["message"] or "decompression bomb" in outcome["message"]
    assert outcome["peak_growth_mib"] < 64, outcome


# ---- volumes --------------------------------------------------------------------------------------------


def _nifti(path: Path, array: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    import nibabel as nib

    image = nib.Nifti1Image(array, np.diag([*zooms, 1.0]))
    image.header.set_zooms(zooms)
    nib.save(image, path)
    return path


def test_inf_voxels_and_zero_spacing_are_refused(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[1, 1, 1] = np.inf
    inf = _nifti(tmp_path / "inf.nii.gz", data)
    assert_refused(read_in_subprocess("read_volume", inf), inf, "1 inf voxel")
    flat = _nifti(tmp_path / "flat.nii", np.zeros((4, 4, 4), np.float32))
    raw = bytearray(flat.read_bytes())
    raw[84:88] = struct.pack("<f", 0.0)  # pixdim[2] = 0 (the y voxel size), sform/qform codes left as saved
    raw[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code = 0: only pixdim describes the grid
    flat.write_bytes(bytes(raw))
    assert_refused(read_in_subprocess("read_volume", flat), flat, "voxel sizes")


def test_gz_header_claiming_more_data_than_present_is_refused_cheaply(tmp_path: Path) -> None:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 256))  # 1 GiB of float32 claimed
    header.set_data_dtype(np.float32)
    header.set_zooms((1.0, 1.0, 1.0))
    path = tmp_path / "claims.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
    assert path.stat().st_size < 4096
    outcome = read_in_subprocess("read_volume", path)
    assert_refused(outcome, path, "bytes")
    assert outcome["peak_growth_mib"] < 64, outcome  # was 1 GB of RSS for this 2 KB file


# ---- landmark files -------------------------------------------------------------------------------------


def test_csv_row_with_an_extra_field_is_refused_not_shifted(tmp_path: Path) -> None:
    path = tmp_path / "landmarks.csv"
    path.write_text("image,x0,y0\na.png,1,2\nb.png,3,4,5\n")
    assert_refused(read_in_subprocess("read_landmark_csv", path), Path(f"{path}, line 3"), "4 fields")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("image,x0,y0\n", ("header without data rows",)),
        ("image,x0,y0\na.png,true,false\n", ("true/false",)),
        ("image,x0,y0\na.png,1,2\na.png,3,4\n", ("listed twice",)),
        ("image,x0,y0\na.png,one,2\n", ("non-numeric",)),
    ],
    ids=["header-only", "boolean", "duplicate-image", "non-numeric"],
)
def test_bad_landmark_csv_rows_are_refused(tmp_path: Path, body: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "landmarks.csv"
    path.write_text(body)
    assert_refused(read_in_subprocess("read_landmark_csv", path), path, *words)


def _coco(path: Path, **overrides) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            {"image_id": 1, "keypoints": [1, 2, 2, 3, 4, 2]},
            {"image_id": 2, "keypoints": [5, 6, 2, 7, 8, 2]},
        ],
        "categories": [{"id": 1, "keypoints": ["p0", "p1"]}],
    }
    data.update(overrides)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"categories": [{"id": 1, "keypoints": ["p0", "p1", "p2"]}]}, ("2 keypoints", "3 as the category")),
        (
            {
                "categories": [],
                "annotations": [
                    {"image_id": 1, "keypoints": [1, 2, 2, 3, 4, 2]},
                    {"image_id": 2, "keypoints": [5, 6, 2]},
                ],
            },
            ("1 keypoints", "2 as in annotations[0]"),
        ),
        ({"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]}, ("used twice",)),
        ({"annotations": [{"image_id": 1, "keypoints": "1,2,2"}]}, ("flat list of numbers",)),
    ],
    ids=["count-vs-category", "count-across-annotations", "duplicate-image-id", "malformed-keypoints"],
)
def test_bad_coco_keypoints_are_refused(tmp_path: Path, overrides: dict, words: tuple[str, ...]) -> None:
    path = _coco(tmp_path / "keypoints.json", **overrides)
    assert_refused(read_in_subprocess("read_coco_keypoints", path), path, *words)


def test_good_coco_file_still_reads_exactly(tmp_path: Path) -> None:
    from medzoo.io import read_coco_keypoints

    records = read_coco_keypoints(_coco(tmp_path / "keypoints.json"))
    np.testing.assert_array_equal(records[1].coords, [[5, 6], [7, 8]])


def test_mha_header_claiming_absurd_size_or_zero_spacing_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.mha"
    huge.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 4096\nElementSpacing = 1 1 1\n"
        "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    outcome = read_in_subprocess("read_volume", huge)
    assert_refused(outcome, huge, "MEDZOO_MAX_ELEMENTS")
    assert outcome["peak_growth_mib"] < 64, outcome
    flat = tmp_path / "flat.mha"
    flat.write_bytes(
        b"ObjectType = Image\nNDims = 2\nDimSize = 2 2\nElementSpacing = 0 1\n"
        b"ElementType = MET_UCHAR\nElementDataFile = LOCAL\n" + bytes(4)
    )
    assert_refused(read_in_subprocess("read_image", flat), flat, "spacing")
