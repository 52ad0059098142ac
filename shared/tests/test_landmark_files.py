"""Landmark file readers/writers: round trips, the real Shenzhen files, and wrong counts."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from medzoo.errors import MedzooDataError
from medzoo.io import (
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


def _coords(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1900, size=(k, 2))


# ------------------------------------------------------------------------------------------------- ISBI


def test_isbi_reads_official_layout_with_extra_lines(tmp_path):
    lines = [f"{800 + k},{1000 + 2 * k}" for k in range(19)] + ["2", "1", "3", "", "1"]
    (tmp_path / "001.txt").write_text("\n".join(lines) + "\n")
    coords = read_isbi_txt(tmp_path / "001.txt", 19)
    assert coords.dtype == np.float64 and coords.shape == (19, 2)
    np.testing.assert_array_equal(coords[:, 0], 800 + np.arange(19))
    np.testing.assert_array_equal(coords[:, 1], 1000 + 2 * np.arange(19))


def test_isbi_round_trip_is_exact(tmp_path):
    coords = np.vstack([_coords(18), [[835.0, 996.0]]])
    write_isbi_txt(tmp_path / "a.txt", coords)
    assert (tmp_path / "a.txt").read_text().splitlines()[-1] == "835,996"  # integers stay integers
    np.testing.assert_array_equal(read_isbi_txt(tmp_path / "a.txt", 19), coords)


def test_isbi_wrong_count(tmp_path):
    write_isbi_txt(tmp_path / "short.txt", _coords(18))
    with pytest.raises(MedzooDataError, match=re.escape("short.txt: found 18 landmark lines; expected 19")):
        read_isbi_txt(tmp_path / "short.txt", 19)
    write_isbi_txt(tmp_path / "long.txt", _coords(20))
    with pytest.raises(MedzooDataError, match="found 20 or more 'x,y' lines; expected 19 landmarks"):
        read_isbi_txt(tmp_path / "long.txt", 19)
    (tmp_path / "bad.txt").write_text("1,2\n3;4\n")
    with pytest.raises(MedzooDataError, match=re.escape("bad.txt, line 2: found '3;4'")):
        read_isbi_txt(tmp_path / "bad.txt", 2)
    with pytest.raises(MedzooDataError, match="non-finite"):
        write_isbi_txt(tmp_path / "nan.txt", np.array([[1.0, np.nan]]))


# -------------------------------------------------------------------------------------------------- CSV


def test_landmark_csv_round_trip(tmp_path):
    mapping = {"a.png": _coords(6, 1), "b.png": _coords(6, 2), "0003.png": _coords(6, 3)}
    write_landmark_csv(tmp_path / "landmarks.csv", mapping)
    header = (tmp_path / "landmarks.csv").read_text().splitlines()[0]
    assert header == "image," + ",".join(f"x{k},y{k}" for k in range(6))
    back = read_landmark_csv(tmp_path / "landmarks.csv")
    assert list(back) == list(mapping)  # file order, and "0003.png" stays a string
    for name, coords in mapping.items():
        np.testing.assert_array_equal(back[name], coords)
    assert read_landmark_csv(tmp_path / "landmarks.csv", num_landmarks=6).keys() == mapping.keys()


def test_landmark_csv_errors(tmp_path):
    write_landmark_csv(tmp_path / "six.csv", {"a.png": _coords(6)})
    with pytest.raises(MedzooDataError, match="found 6 complete landmark column pairs"):
        read_landmark_csv(tmp_path / "six.csv", num_landmarks=19)
    (tmp_path / "gap.csv").write_text("image,x0,y0,x1,y1\na.png,1,2,3,\n")
    message = re.escape("gap.csv, data row 1: found an empty or non-finite cell")
    with pytest.raises(MedzooDataError, match=message):
        read_landmark_csv(tmp_path / "gap.csv")
    (tmp_path / "odd.csv").write_text("image,x0,y0,x1\na.png,1,2,3\n")
    with pytest.raises(MedzooDataError, match="found 1 complete landmark column pairs"):
        read_landmark_csv(tmp_path / "odd.csv")
    (tmp_path / "dup.csv").write_text("image,x0,y0\na.png,1,2\na.png,3,4\n")
    with pytest.raises(MedzooDataError, match=re.escape("image 'a.png' listed twice")):
        read_landmark_csv(tmp_path / "dup.csv")
    with pytest.raises(MedzooDataError, match="found 5 landmarks; expected 6"):
        write_landmark_csv(tmp_path / "mixed.csv", {"a.png": _coords(6), "b.png": _coords(5)})


# ------------------------------------------------------------------------------------ normalised TXT


def test_normalized_txt_round_trip(tmp_path):
    coords = _coords(6) / 1900 * np.array([750, 730])
    write_normalized_txt(tmp_path / "n.txt", coords, width=750, height=730)
    lines = (tmp_path / "n.txt").read_text().splitlines()
    assert lines[0] == "6" and len(lines) == 7
    np.testing.assert_allclose(read_normalized_txt(tmp_path / "n.txt", 750, 730), coords, rtol=1e-12)


def test_normalized_txt_errors(tmp_path):
    (tmp_path / "short.txt").write_text("6\n0.1 0.2\n0.3 0.4\n")
    with pytest.raises(MedzooDataError, match="found 2 coordinate lines; expected 6 as declared on line 1"):
        read_normalized_txt(tmp_path / "short.txt", 100, 100)
    (tmp_path / "pixels.txt").write_text("1\n312.2 104.9\n")
    with pytest.raises(MedzooDataError, match=re.escape("expected values in [0, 1]")):
        read_normalized_txt(tmp_path / "pixels.txt", 100, 100)
    (tmp_path / "two.txt").write_text("2\n0.1 0.2\n0.3 0.4\n")
    with pytest.raises(MedzooDataError, match="found K = 2 on line 1; expected 6 landmarks"):
        read_normalized_txt(tmp_path / "two.txt", 100, 100, num_landmarks=6)


def test_shenzhen_normalised_landmarks_match_cases_csv(shared_data):
    folder = shared_data / "chest-shenzhen"
    cases = pd.read_csv(folder / "cases.csv")
    in_pixels = read_landmark_csv(folder / "cases.csv", 6, x_column="lm{}_x_px", y_column="lm{}_y_px")
    assert len(in_pixels) == 11
    for row in cases.itertuples():
        txt = folder / "landmarks_all279" / row.image.replace(".png", ".txt")
        coords = read_normalized_txt(txt, width=row.width, height=row.height, num_landmarks=6)
        # cases.csv rounds pixels to 0.1; the TXT files are exact fractions of the image size.
        np.testing.assert_allclose(coords, in_pixels[row.image], atol=0.05 + 1e-9)
    # Anatomy check on one case: the right apex (0) lies above the right costophrenic angle (1), and the
    # patient's right lung is on the image's left.
    first = in_pixels["CHNCXR_0001_0.png"]
    assert first[0, 1] < first[1, 1] and first[0, 0] < first[3, 0]


def test_all_279_shenzhen_files_parse(shared_data):
    files = sorted((shared_data / "chest-shenzhen" / "landmarks_all279").glob("*.txt"))
    assert len(files) == 279
    for file in files:
        coords = read_normalized_txt(file, width=1, height=1, num_landmarks=6)
        assert ((coords >= 0) & (coords <= 1)).all()


# ------------------------------------------------------------------------------------------------- COCO


def test_coco_round_trip_with_spacing_and_missing_points(tmp_path):
    coords = _coords(4)
    visible = np.array([True, False, True, True])
    coords[~visible] = np.nan
    records = [
        LandmarkRecord("001.bmp", coords, visible, spacing=0.1, width=1935, height=2400),
        LandmarkRecord("002.bmp", _coords(4, 5), spacing=None),
    ]
    names = ["sella", "nasion", "orbitale", "porion"]
    write_coco_keypoints(tmp_path / "kp.json", records, keypoint_names=names)
    data = json.loads((tmp_path / "kp.json").read_text())
    assert data["images"][0]["pixel_spacing"] == 0.1 and "pixel_spacing" not in data["images"][1]
    assert data["annotations"][0]["keypoints"][3:6] == [0.0, 0.0, 0]
    assert data["annotations"][0]["num_keypoints"] == 3
    assert data["categories"][0]["keypoints"][1] == "nasion"
    back = read_coco_keypoints(tmp_path / "kp.json")
    assert [r.image for r in back] == ["001.bmp", "002.bmp"]
    np.testing.assert_array_equal(back[0].coords, coords)  # NaN where not annotated
    np.testing.assert_array_equal(back[0].visible, visible)
    assert back[0].spacing == 0.1 and back[0].width == 1935 and back[0].height == 2400
    assert back[1].spacing is None and back[1].visible.all()
    np.testing.assert_array_equal(back[1].coords, records[1].coords)


def test_coco_reads_foreign_file_with_row_col_spacing(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "x.png", "pixel_spacing": [0.5, 0.5]}],
        "annotations": [{"id": 1, "image_id": 7, "keypoints": [10, 20, 2, 30, 40, 1]}],
        "categories": [{"id": 1, "name": "lm", "keypoints": ["a", "b"]}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    (record,) = read_coco_keypoints(tmp_path / "c.json")
    np.testing.assert_array_equal(record.coords, [[10, 20], [30, 40]])
    assert record.visible.all() and record.spacing == 0.5 and record.width is None


def test_coco_errors(tmp_path):
    base = {"images": [{"id": 1, "file_name": "x.png"}], "categories": []}
    short = {**base, "annotations": [{"image_id": 1, "keypoints": [1, 2]}]}
    (tmp_path / "bad.json").write_text(json.dumps(short))
    with pytest.raises(MedzooDataError, match=re.escape("annotations[0]: found 2 keypoint values")):
        read_coco_keypoints(tmp_path / "bad.json")
    (tmp_path / "orphan.json").write_text(
        json.dumps({**base, "annotations": [{"image_id": 9, "keypoints": [1, 2, 2]}]})
    )
    with pytest.raises(MedzooDataError, match="found image_id 9"):
        read_coco_keypoints(tmp_path / "orphan.json")
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(MedzooDataError, match="found invalid JSON"):
        read_coco_keypoints(tmp_path / "broken.json")
    aniso = {
        "images": [{"id": 1, "file_name": "x.png", "pixel_spacing": [0.1, 0.2]}],
        "annotations": [{"image_id": 1, "keypoints": [1, 2, 2]}],
    }
    (tmp_path / "aniso.json").write_text(json.dumps(aniso))
    with pytest.raises(MedzooDataError, match="anisotropic pixel_spacing"):
        read_coco_keypoints(tmp_path / "aniso.json")
