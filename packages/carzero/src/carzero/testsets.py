"""The five official zero-shot test sets of CARZero, in their released layouts, as a registry.

``TEST_SETS`` maps a name to its loader (``root, **options -> TestSet``): ``chestxray14``, ``chexpert``,
``padchest``, ``openi`` and ``chestxdet10``; ``load_test_set(name, root, **options)`` looks it up.
ChestX-ray14's 14 classes are ``medzoo.synthetic.NIH_FINDINGS`` (the synthetic demo set uses the same names).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medzoo.errors import MedzooDataError
from medzoo.synthetic import NIH_FINDINGS

CHEXPERT_COMPETITION_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
CHESTXDET10_CLASSES = (
    "Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax",
)  # fmt: skip
# Our own OpenI classes (carzero <= 0.2; `load_openi(labels="mesh_major")`): MeSH "major" terms, first
# component, case-insensitive. The default is the reference's list (`openi_reference_protocol`).
OPENI_CLASSES = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Pulmonary Edema", "Pleural Effusion",
    "Pulmonary Emphysema", "Pulmonary Fibrosis", "Fractures, Bone", "Hernia, Hiatal", "Infiltrate",
    "Lung Diseases, Interstitial",
    "Mass", "Nodule", "Opacity", "Pneumonia", "Pneumothorax", "Calcinosis", "Granulomatous Disease",
)  # fmt: skip


@dataclass
class TestSet:
    """A zero-shot test set: image files and (N, C) 0/1 labels for `class_names`."""

    __test__ = False  # not a pytest test class

    name: str
    class_names: list[str]
    image_paths: list[Path]
    labels: np.ndarray

    def positives(self) -> np.ndarray:
        """(C,) number of positive images per class."""
        return self.labels.sum(axis=0).astype(np.int64)


def find_one(root: Path, patterns: Sequence[str], what: str) -> Path:
    """The first file under `root` matching one of `patterns` (tried in order); an error names `what`."""
    for pattern in patterns:
        matches = sorted(root.glob(pattern))
        if matches:
            return matches[0]
    raise MedzooDataError(root, f"no {what}", f"a file matching {list(patterns)} ({what})")


def require_columns(frame: pd.DataFrame, columns: Sequence[str], where: Path) -> None:
    """Raise MedzooDataError naming `where` when `frame` lacks any of `columns`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MedzooDataError(where, f"columns {list(frame.columns)}", f"also the columns {missing}")


def require_images(paths: Sequence[Path], where: Path) -> None:
    """Raise MedzooDataError naming `where` and the first missing file when any of `paths` is absent."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MedzooDataError(
            where,
            f"{len(missing)} of {len(paths)} listed images missing on disk, first {missing[0]}",
            "every listed image present (or pass check_images=False)",
        )


def load_chestxray14(root: str | Path, split: str = "test", check_images: bool = True) -> TestSet:
    """NIH ChestX-ray14 in its released layout.

    Layout: ``root/Data_Entry_2017*.csv[.gz]`` (also looked for in ``root/metadata/``), ``root/test_list.txt``
    (official test split; ``split="all"`` uses every row instead) and the PNGs in ``root/images/`` or the
    release's ``root/images_*/images/``. Labels: the 14 findings of "Finding Labels" ('|'-separated).
    """
    root = Path(root)
    table_path = find_one(
        root,
        ["Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz", "metadata/Data_Entry_2017*.csv*"],
        "Data_Entry_2017 label table",
    )
    table = pd.read_csv(table_path)
    require_columns(table, ["Image Index", "Finding Labels"], table_path)
    if split == "test":
        list_path = root / "test_list.txt"
        if not list_path.is_file():
            raise MedzooDataError(list_path, "no such file", "the official test_list.txt (or split='all')")
        names = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        table = table.set_index("Image Index").loc[lambda t: t.index.isin(names)].reset_index()
        if len(table) != len(set(names)):
            raise MedzooDataError(list_path, f"{len(set(names)) - len(table)} names not in {table_path.name}",
                                  "every test image listed in the label table")  # fmt: skip
    elif split != "all":
        raise MedzooDataError("split", repr(split), "'test' or 'all'")
    findings = table["Finding Labels"].fillna("").str.split("|")
    labels = np.array([[name in row for name in NIH_FINDINGS] for row in findings], dtype=np.float32)
    folders = [root / "images", *sorted(root.glob("images_*/images"))]
    index = {p.name: p for folder in folders[1:] if folder.is_dir() for p in folder.iterdir()}
    paths = [index.get(name, folders[0] / name) for name in table["Image Index"]]
    if check_images:
        require_images(paths, table_path)
    return TestSet("chestxray14", list(NIH_FINDINGS), paths, labels)


def load_chexpert(
    root: str | Path, csv: str = "test_labels.csv", frontal_only: bool = False, check_images: bool = True
) -> TestSet:
    """CheXpert test set (500 patients): ``root/<csv>`` with a ``Path`` column relative to ``root`` (a leading
    ``CheXpert-v1.0*/`` folder is tried both with and without) and 0/1 columns; the 5 competition classes.
    """
    root = Path(root)
    csv_path = root / csv
    if not csv_path.is_file():
        csv_path = find_one(root, ["test_labels.csv", "test.csv", "*/test_labels.csv"], "CheXpert test CSV")
    table = pd.read_csv(csv_path)
    require_columns(table, ["Path", *CHEXPERT_COMPETITION_CLASSES], csv_path)
    if frontal_only:
        table = table[table["Path"].str.contains("frontal")].reset_index(drop=True)
    paths = []
    for relative in table["Path"]:
        path = root / relative
        if not path.is_file() and "/" in relative:
            path = root / relative.split("/", 1)[1]
        paths.append(path)
    labels = (table[list(CHEXPERT_COMPETITION_CLASSES)].fillna(0).to_numpy() == 1).astype(np.float32)
    if check_images:
        require_images(paths, csv_path)
    return TestSet("chexpert", list(CHEXPERT_COMPETITION_CLASSES), paths, labels)


def parse_padchest_labels(text: Any) -> list[str]:
    """PadChest's ``Labels`` cell, e.g. "['pleural effusion', ' cardiomegaly']" -> a list of names."""
    if not isinstance(text, str):
        return []
    items = text.strip().strip("[]").split(",")
    return [item.strip().strip("'\"").strip().lower() for item in items if item.strip().strip("'\"").strip()]


def load_padchest(
    root: str | Path,
    physician_only: bool = True,
    frontal_only: bool = True,
    exclude: Sequence[str] = ("normal",),
    check_images: bool = True,
) -> TestSet:
    """PadChest: ``root/PADCHEST_chest_x_ray_images_labels_160K*.csv[.gz]`` with ImageID, ImageDir,
    Labels, MethodLabel, Projection; images in ``root/<ImageDir>/<ImageID>`` or ``root/images/<ImageID>``.

    The test set is the physician-labelled frontal (PA, AP, AP_horizontal) subset; classes are every label in
    it (about 190) except `exclude`: only ``normal``, as in the reference (carzero <= 0.2 also removed
    "exclude", "suboptimal study" and "unchanged"; pass them to get that back). Empty label strings are
    skipped.
    """
    root = Path(root)
    csv_path = find_one(root, ["PADCHEST*.csv", "PADCHEST*.csv.gz"], "PadChest label CSV")
    table = pd.read_csv(csv_path, low_memory=False)
    needed = ["ImageID", "Labels"] + ["MethodLabel"] * physician_only + ["Projection"] * frontal_only
    require_columns(table, needed, csv_path)
    if physician_only:
        table = table[table["MethodLabel"] == "Physician"]
    if frontal_only:
        table = table[table["Projection"].isin(["PA", "AP", "AP_horizontal"])]
    table = table.reset_index(drop=True)
    rows = [set(parse_padchest_labels(cell)) - set(exclude) for cell in table["Labels"]]
    classes = sorted(set().union(*rows)) if rows else []
    labels = np.array([[name in row for name in classes] for row in rows], dtype=np.float32)
    paths = []
    for _, record in table.iterrows():
        candidate = root / "images" / record["ImageID"]
        if "ImageDir" in table and not candidate.is_file():
            candidate = root / str(int(record["ImageDir"])) / record["ImageID"]
        paths.append(candidate)
    if check_images:
        require_images(paths, csv_path)
    return TestSet("padchest", classes, paths, labels.reshape(len(rows), len(classes)))


def openi_reference_protocol() -> dict[str, Any]:
    """The reference's OpenI label list and synonym table (package data ``protocols/openi_reference.yaml``).

    Returns ``{"source": "automatic", "classes": [18 names], "synonyms": {class: [synonyms]}}``.
    """
    from importlib.resources import files

    import yaml

    data = yaml.safe_load(files("carzero").joinpath("protocols/openi_reference.yaml").read_text())
    return {"source": data["source"], "classes": list(data["classes"]), "synonyms": dict(data["synonyms"])}


def openi_labels_from_terms(
    terms: Sequence[str], class_names: Sequence[str], synonyms: dict[str, Sequence[str]]
) -> np.ndarray:
    """The reference's OpenI matching: class c is positive when ``c.lower()`` or one of its synonyms
    (lower-cased) is a substring of the report's terms (lower-cased, joined with '; ').

    Example: terms ["Calcified Granuloma/lung/upper lobe/right", "pulmonary atelectasis"] give Atelectasis,
    Calcified Granuloma and Granuloma.
    """
    text = "; ".join(t.strip().lower() for t in terms if t and t.strip())
    return np.array(
        [any(p.lower() in text for p in [name, *synonyms.get(name, [])]) for name in class_names],
        dtype=np.float32,
    )


def _openi_mesh_major_labels(terms: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    wanted = {name.lower(): i for i, name in enumerate(class_names)}
    row = np.zeros(len(class_names), dtype=np.float32)
    for term in terms:
        index = wanted.get(term.split("/")[0].strip().lower())
        if index is not None:
            row[index] = 1
    return row


OPENI_LABELS = ("reference", "mesh_major")


def load_openi(
    root: str | Path,
    labels: str = "reference",
    class_names: Sequence[str] | None = None,
    check_images: bool = True,
) -> TestSet:
    """OpenI (Indiana University): ``root/ecgen-radiology/*.xml`` reports and ``root/NLMCXR_png/<id>.png``.

    Each report's ``<parentImage id=...>`` images get the labels of its MeSH terms:

    - ``labels="reference"`` (default, the reference's evaluation): the 18 classes of
      `openi_reference_protocol` from the ``<automatic>`` terms, substring and synonym matching
      (`openi_labels_from_terms`);
    - ``labels="mesh_major"`` (ours, carzero <= 0.2): `OPENI_CLASSES` from the ``<major>`` terms; a class is
      positive when a term's first component (before '/') equals its name, case-insensitively.

    `class_names` replaces the class list of either variant.
    """
    from xml.etree import ElementTree

    if labels not in OPENI_LABELS:
        raise MedzooDataError("openi labels", repr(labels), f"one of {list(OPENI_LABELS)}")
    root = Path(root)
    reports = sorted((root / "ecgen-radiology").glob("*.xml"))
    if not reports:
        raise MedzooDataError(root / "ecgen-radiology", "no XML reports", "OpenI's ecgen-radiology/*.xml")
    if labels == "reference":
        protocol = openi_reference_protocol()
        names = list(class_names or protocol["classes"])
    else:
        names = list(class_names or OPENI_CLASSES)
    paths, rows, tag = [], [], "automatic" if labels == "reference" else "major"
    seen_terms = False
    for report in reports:
        try:
            tree = ElementTree.parse(report)
        except ElementTree.ParseError as error:
            raise MedzooDataError(report, f"invalid XML ({error})", "an OpenI report XML") from None
        seen_terms = seen_terms or next(tree.iter(tag), None) is not None
        if labels == "reference":
            terms = [node.text or "" for node in tree.iter("automatic")]
            row = openi_labels_from_terms(terms, names, protocol["synonyms"])
        else:
            row = _openi_mesh_major_labels([node.text or "" for node in tree.iter("major")], names)
        for image in tree.iter("parentImage"):
            paths.append(root / "NLMCXR_png" / f"{image.get('id')}.png")
            rows.append(row)
    if not seen_terms:
        raise MedzooDataError(
            root / "ecgen-radiology",
            f"no <{tag}> MeSH term in any of {len(reports)} reports",
            f"OpenI reports whose <MeSH> holds <{tag}> terms (labels={labels!r})",
        )
    if check_images:
        require_images(paths, root / "ecgen-radiology")
    table = np.array(rows, dtype=np.float32).reshape(len(rows), len(names))
    return TestSet("openi", names, paths, table)


def load_chestxdet10(root: str | Path, json_name: str = "test.json", check_images: bool = True) -> TestSet:
    """ChestX-Det10: ``root/<json_name>`` (a list of {"file_name", "syms", "boxes"}) and the images in
    ``root/test_data/`` (or ``root/test/``). A class is positive when it is among the image's ``syms``.
    """
    root = Path(root)
    json_path = root / json_name
    if not json_path.is_file():
        raise MedzooDataError(json_path, "no such file", "ChestX-Det10's test.json")
    try:
        records = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise MedzooDataError(json_path, f"invalid JSON ({error})", "a list of {file_name, syms}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise MedzooDataError(json_path, "another structure", "a list of {file_name, syms, boxes} records")
    for i, record in enumerate(records):
        missing = [key for key in ("file_name", "syms") if key not in record]
        if missing:
            raise MedzooDataError(
                f"{json_path} (record {i})", f"keys {sorted(record)}", f"also the keys {missing}"
            )
    folder = root / "test_data" if (root / "test_data").is_dir() else root / "test"
    paths = [folder / r["file_name"] for r in records]
    labels = np.array(
        [[name in r["syms"] for name in CHESTXDET10_CLASSES] for r in records], dtype=np.float32
    ).reshape(len(records), len(CHESTXDET10_CLASSES))
    if check_images:
        require_images(paths, json_path)
    return TestSet("chestxdet10", list(CHESTXDET10_CLASSES), paths, labels)


# The registry of test-set loaders: `carzero evaluate --dataset NAME` and `data.test_set` look names up here.
TEST_SETS: dict[str, Callable[..., TestSet]] = {
    "chestxray14": load_chestxray14,
    "chexpert": load_chexpert,
    "padchest": load_padchest,
    "openi": load_openi,
    "chestxdet10": load_chestxdet10,
}


def load_test_set(name: str, root: str | Path, **options: Any) -> TestSet:
    """Load one of the five official test sets by name (see `TEST_SETS`) with the loader's `options`.

    Raises:
        MedzooDataError: an unknown name, or an option the loader does not take (the message lists both).
    """
    if name not in TEST_SETS:
        raise MedzooDataError("dataset", repr(name), f"one of {sorted(TEST_SETS)}")
    loader = TEST_SETS[name]
    accepted = [p for p in inspect.signature(loader).parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MedzooDataError(f"dataset {name}", f"options {unknown}", f"options among {accepted}")
    return loader(root, **options)
