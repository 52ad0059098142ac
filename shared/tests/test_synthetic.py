"""medzoo.synthetic: determinism, on-disk layouts, and that the generated content is what it claims to be."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medzoo.io import read_landmark_csv, read_volume
from medzoo.synthetic import (
    NIH_FINDINGS,
    ct_organ_table,
    landmark_phantom_template,
    make_ct_dataset,
    make_cxr_dataset,
    make_landmark_phantoms,
    render_cxr,
    render_landmark_phantom,
)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (make_landmark_phantoms, {"n_images": 3, "num_landmarks": 5, "size": (48, 40)}),
        (make_cxr_dataset, {"n_images": 6, "size": (40, 48)}),
        (make_ct_dataset, {"n_volumes": 2, "shape": (20, 18, 16), "num_organs": 3}),
    ],
    ids=["landmarks", "cxr", "ct"],
)
def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path, make, kwargs):
    first = _file_bytes(make(tmp_path / "a", seed=3, **kwargs))
    again = _file_bytes(make(tmp_path / "b", seed=3, **kwargs))
    other = _file_bytes(make(tmp_path / "c", seed=4, **kwargs))
    assert first == again
    common = [name for name in first.keys() & other.keys() if name.endswith((".png", ".csv", ".nii.gz"))]
    assert len(common) >= 3
    assert all(first[name] != other[name] for name in common)


# ---- landmark phantoms ---------------------------------------------------------------------------------


def test_landmark_layout_parses_with_pandas_and_medzoo_io(tmp_path):
    root = make_landmark_phantoms(tmp_path, n_images=4, num_landmarks=19, size=(96, 128), seed=0)
    table = pd.read_csv(root / "landmarks.csv")
    assert list(table.columns) == ["image"] + [f"{a}{k}" for k in range(19) for a in ("x", "y")]
    assert list(table["image"]) == [f"phantom_{i:04d}.png" for i in range(4)]
    mapping = read_landmark_csv(root / "landmarks.csv", num_landmarks=19)
    for name, coords in mapping.items():
        with Image.open(root / "images" / name) as image:
            assert image.mode == "L" and image.size == (128, 96)  # PIL size is (W, H)
        np.testing.assert_allclose(
            coords, table.loc[table.image == name].iloc[0, 1:].to_numpy(float).reshape(19, 2)
        )


def test_without_jitter_landmarks_equal_the_template():
    height, width = 100, 140
    _, coords = render_landmark_phantom(
        np.random.default_rng(0),
        5,
        (height, width),
        rotation_deg=0,
        scale_range=(1, 1),
        translation=0,
        shape_jitter=0,
    )
    template = landmark_phantom_template(5)
    tips, joints = template.points()
    centre, unit = np.array([(width - 1) / 2, (height - 1) / 2]), min(height, width) / 2
    np.testing.assert_allclose(coords[0::2], centre + unit * tips)
    np.testing.assert_allclose(coords[1::2], centre + unit * joints[:2])
    # Bone 0 points up (angle -90 deg plus a quarter of the bone spacing), so its tip is above the centre.
    assert coords[0, 1] < centre[1] - 0.5 * unit


def _on_bright_structure(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Per landmark: the 3x3 mean at the landmark is above the image's 90th percentile (bone knobs)."""
    padded = np.pad(image.astype(np.float64), 1, mode="edge")
    cols, rows = np.round(coords).astype(int).T
    local = np.mean([padded[rows + 1 + dr, cols + 1 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)], axis=0)
    return local > np.percentile(image, 90)


@pytest.mark.parametrize("num_landmarks", [6, 19])
def test_landmarks_lie_inside_the_image_on_bright_bone(num_landmarks):
    height, width = 128, 160
    for seed in range(6):
        image, coords = render_landmark_phantom(np.random.default_rng(seed), num_landmarks, (height, width))
        assert coords.shape == (num_landmarks, 2)
        assert np.all((coords >= 0) & (coords <= [width - 1, height - 1]))
        assert _on_bright_structure(image, coords).all()
        # The check can fail: the same points moved sideways off their bone (8% of the image) are not bright.
        outward = coords - [(width - 1) / 2, (height - 1) / 2]
        sideways = (
            np.stack([-outward[:, 1], outward[:, 0]], axis=1) / np.linalg.norm(outward, axis=1)[:, None]
        )
        moved = np.clip(coords + 0.08 * height * sideways, 0, [width - 1, height - 1])
        assert _on_bright_structure(image, moved).mean() < 0.3


def test_affine_jitter_moves_every_landmark_between_images():
    coords = np.stack(
        [render_landmark_phantom(np.random.default_rng(s), 6, (128, 128))[1] for s in range(12)]
    )
    spread = coords.std(axis=0)  # (K, 2) pixels
    assert np.all(spread > 1.0)
    assert np.all(spread < 12.0)  # jitter, not a different anatomy


# ---- CXR -----------------------------------------------------------------------------------------------

# Independent of the generator's phrase table: what a reader would search for to find each finding.
FINDING_PATTERNS = {
    "Atelectasis": r"atelecta",
    "Cardiomegaly": r"cardiomegaly",
    "Effusion": r"pleural effusion",
    "Infiltration": r"infiltra",
    "Mass": r"\bmass\b",
    "Nodule": r"nodul",
    "Pneumonia": r"pneumonia",
    "Pneumothorax": r"pneumothorax",
    "Consolidation": r"consolidation",
    "Edema": r"\bedema\b",
    "Emphysema": r"emphysema",
    "Fibrosis": r"fibro",
    "Pleural_Thickening": r"pleural thickening",
    "Hernia": r"hernia",
}
NEGATION = re.compile(r"^(no|there is no)\b")


def _mentions(report: str) -> tuple[set[str], set[str]]:
    """(findings named affirmatively, findings named only in negations) in a report."""
    positive, negative = set(), set()
    for sentence in re.split(r"(?<=\.)\s+", report):
        sentence = re.sub(r"^(findings|impression):\s*", "", sentence.strip().lower())
        for name, pattern in FINDING_PATTERNS.items():
            if re.search(pattern, sentence):
                (negative if NEGATION.match(sentence) else positive).add(name)
    return positive, negative


@pytest.fixture(scope="module")
def cxr_root(tmp_path_factory) -> Path:
    return make_cxr_dataset(tmp_path_factory.mktemp("cxr"), n_images=240, size=(32, 32), seed=0)


def test_cxr_reports_csv_layout(cxr_root):
    reports = pd.read_csv(cxr_root / "reports.csv")
    assert list(reports.columns) == ["image", "split", "view", "report", "labels", *NIH_FINDINGS]
    assert set(reports["split"]) == {"train", "validate", "test"}
    assert set(reports["view"]) <= {"PA", "AP", "LATERAL"}
    for _, row in reports.iterrows():
        assert (cxr_root / row["image"]).is_file()
        positives = [name for name in NIH_FINDINGS if row[name] == 1]
        assert row["labels"] == ("|".join(positives) if positives else "No Finding")
    assert set(np.unique(reports[list(NIH_FINDINGS)].to_numpy())) == {0, 1}
    with Image.open(cxr_root / reports["image"][0]) as image:
        assert image.mode == "L" and image.size == (32, 32)


def test_cxr_nih_layout_agrees_with_reports(cxr_root):
    entries = pd.read_csv(cxr_root / "Data_Entry_2017.csv")
    reports = pd.read_csv(cxr_root / "reports.csv")
    nih_columns = [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
    ]
    assert list(entries.columns[:7]) == [*nih_columns, "View Position"]
    assert list(entries["Image Index"]) == [Path(p).name for p in reports["image"]]
    assert list(entries["Finding Labels"]) == list(reports["labels"])
    assert list(entries["View Position"]) == list(reports["view"])
    assert set(entries["Patient Gender"]) <= {"M", "F"}
    assert all(
        name == f"{p:08d}_{f:03d}.png"
        for name, p, f in zip(
            entries["Image Index"], entries["Patient ID"], entries["Follow-up #"], strict=True
        )
    )
    train_val = (cxr_root / "train_val_list.txt").read_text().split()
    test = (cxr_root / "test_list.txt").read_text().split()
    assert sorted(train_val + test) == sorted(entries["Image Index"])
    assert set(test) == {Path(p).name for p in reports.loc[reports.split == "test", "image"]}
    test_patients = set(entries.loc[entries["Image Index"].isin(test), "Patient ID"])
    assert test_patients.isdisjoint(entries.loc[entries["Image Index"].isin(train_val), "Patient ID"])


def test_cxr_label_frequencies_are_long_tailed(cxr_root):
    counts = pd.read_csv(cxr_root / "reports.csv")[list(NIH_FINDINGS)].sum()
    assert counts.min() >= 1  # every class present
    assert counts["Infiltration"] == counts.max()  # the real NIH head class
    assert counts.max() >= 5 * counts.min()
    head = counts.sort_values(ascending=False)
    assert head.iloc[:3].sum() > 0.5 * counts.sum()  # three head classes hold most positives
    no_finding = (pd.read_csv(cxr_root / "reports.csv")["labels"] == "No Finding").mean()
    assert 0.1 < no_finding < 0.7


def test_cxr_reports_name_exactly_the_positive_findings(cxr_root):
    reports = pd.read_csv(cxr_root / "reports.csv")
    negated_seen = 0
    for _, row in reports.iterrows():
        positive, negative = _mentions(row["report"])
        assert positive == {name for name in NIH_FINDINGS if row[name] == 1}, row["report"]
        assert not negative & positive, row["report"]
        negated_seen += len(negative)
        if row["labels"] == "No Finding":
            assert row["report"].endswith("No acute cardiopulmonary process.")
    assert negated_seen > len(reports)  # negations are there, and not misread as findings
    assert reports["report"].nunique() > 0.8 * len(reports)  # several phrasings


def test_every_finding_draws_a_visible_distinct_pattern():
    size = (96, 96)
    normal = render_cxr(np.random.default_rng(7), [], size).astype(np.float64)
    differences = {}
    for name in NIH_FINDINGS:
        diseased = render_cxr(np.random.default_rng(7), [name], size).astype(np.float64)
        diff = diseased - normal
        assert np.abs(diff).max() > 20, f"{name} is not visible"
        assert (np.abs(diff) > 8).mean() > 0.002, f"{name} covers almost no pixels"
        differences[name] = np.abs(diff).ravel()
    names = list(differences)
    similarity = np.corrcoef(np.stack([differences[n] for n in names]))
    off_diagonal = similarity[~np.eye(len(names), dtype=bool)]
    assert off_diagonal.max() < 0.95, "two findings draw the same pattern"


def test_cxr_custom_classes_get_generic_patterns_and_reports(tmp_path):
    root = make_cxr_dataset(tmp_path, n_images=12, size=(32, 32), classes=["Fracture", "Lesion"], seed=1)
    reports = pd.read_csv(root / "reports.csv")
    assert list(reports.columns[5:]) == ["Fracture", "Lesion"]
    for _, row in reports.iterrows():
        for name in ("Fracture", "Lesion"):
            stated = re.search(rf"(?<!no ){name.lower()}", row["report"].lower().split("impression:")[1])
            assert bool(stated) == bool(row[name]), row["report"]


# ---- CT ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_root(tmp_path_factory) -> Path:
    return make_ct_dataset(
        tmp_path_factory.mktemp("ct"), n_volumes=2, shape=(48, 40, 36), spacing=(1.5, 2.0, 3.0), num_organs=6
    )


def test_ct_msd_layout_parses_with_json_and_nibabel(ct_root):
    dataset = json.loads((ct_root / "dataset.json").read_text())
    assert dataset["modality"] == {"0": "CT"}
    assert dataset["numTraining"] == len(dataset["training"]) == 2
    assert dataset["labels"] == {
        "0": "background",
        **{str(k): o[0] for k, o in enumerate(ct_organ_table(6), 1)},
    }
    for pair in dataset["training"]:
        image = nib.load(ct_root / pair["image"])
        label = nib.load(ct_root / pair["label"])
        assert image.shape == label.shape == (48, 40, 36)
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(np.diag(image.affine)[:3], [1.5, 2.0, 3.0])
        np.testing.assert_allclose(label.affine, image.affine)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        volume = read_volume(ct_root / pair["image"])
        assert volume.spacing == pytest.approx((1.5, 2.0, 3.0)) and volume.orientation == "RAS"
        assert set(np.unique(np.asarray(label.dataobj))) == set(range(7))  # every organ present


def test_ct_label_voxels_have_their_organs_hu(ct_root):
    dataset = json.loads((ct_root / "dataset.json").read_text())
    organs = ct_organ_table(6)
    for pair in dataset["training"]:
        hu = np.asarray(nib.load(ct_root / pair["image"]).dataobj).astype(np.float64)
        labels = np.asarray(nib.load(ct_root / pair["label"]).dataobj)
        for k, (name, organ_hu, _, _) in enumerate(organs, start=1):
            voxels = hu[labels == k]
            assert abs(np.median(voxels) - organ_hu) < 5, name
            assert np.mean(np.abs(voxels - organ_hu) < 35) > 0.99, name
        background = hu[labels == 0]
        # Background is air, fat, soft tissue (0..60 HU) and spine (~700 HU).
        assert np.mean(background < -900) > 0.1
        soft = background[(background > -50) & (background < 200)]
        assert 20 < np.median(soft) < 60
        assert abs(np.median(background[background > 500]) - 700) < 10
        assert hu[0, 0, :].max() < -900  # corners are air


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    from medzoo.synthetic import default_cache_dir

    monkeypatch.delenv("MEDZOO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "medzoo"
    assert default_cache_dir("hyspark") == tmp_path / "xdg" / "medzoo" / "hyspark"
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir("carzero") == tmp_path / "mine" / "carzero"
