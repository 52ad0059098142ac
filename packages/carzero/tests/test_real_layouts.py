"""The four downloaded test sets in their released layouts: exact headers, keys and quirks of the real files.

Each file below copies the real header (column names, order, the index column PadChest's CSV starts with)
and the real quirks (CheXpert's `CheXpert-v1.0/` path prefix and -1.0/blank uncertain labels, PadChest's
bracketed label strings with quotes, leading spaces and empty items, OpenI's XML with both <major> and
<automatic> MeSH terms, ChestX-Det10's JSON keys). Each loader must give the hand-derived labels, and a
renamed column or key must be a clear error naming it, never silently empty labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from carzero.testsets import (
    CHESTXDET10_CLASSES,
    load_chestxdet10,
    load_chexpert,
    load_openi,
    load_padchest,
    openi_labels_from_terms,
    openi_reference_protocol,
)
from medzoo.errors import MedzooDataError
from medzoo.io import write_png


def grey_png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.full((24, 20), 90, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- CheXpert

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)
CHEXPERT_ROWS = [
    # uncertain (-1.0) and blank cells count as negative; only 1.0 is positive
    "CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,,1.0,1.0,1.0,,,-1.0,,"
    "1.0,0.0,,,,1.0",
    "CheXpert-v1.0/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,,,0.0,,,1.0,,,-1.0,,1.0,,,",
    "CheXpert-v1.0/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,,,0.0,,,1.0,,,-1.0,,1.0,,,",
]


def write_chexpert(root, header=CHEXPERT_HEADER):
    (root / "valid.csv").write_text("\n".join([header, *CHEXPERT_ROWS]) + "\n")
    for row in CHEXPERT_ROWS:  # the images without the release's top folder
        grey_png(root / row.split(",")[0].split("/", 1)[1])


def test_chexpert_released_header_prefix_and_uncertain_labels(tmp_path):
    write_chexpert(tmp_path)
    test = load_chexpert(tmp_path, csv="valid.csv")
    # Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
    assert test.labels.tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
    assert all(p.is_file() for p in test.image_paths)
    frontal = load_chexpert(tmp_path, csv="valid.csv", frontal_only=True)
    assert [p.name for p in frontal.image_paths] == ["view1_frontal.jpg"] * 2


@pytest.mark.parametrize("column", ["Path", "Pleural Effusion", "Atelectasis"])
def test_chexpert_renamed_column_is_an_error(tmp_path, column):
    write_chexpert(tmp_path, CHEXPERT_HEADER.replace(column, column.lower() + "_x"))
    with pytest.raises(MedzooDataError, match=column):
        load_chexpert(tmp_path, csv="valid.csv")


# ---------------------------------------------------------------------------------------------- PadChest

PADCHEST_HEADER = (
    ",ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,ViewPosition_DICOM,"
    "Projection,MethodProjection,Pediatric,Modality_DICOM_1,Manufacturer_DICOM,PhotometricInterpretation_DICOM,"
    "PixelRepresentation_DICOM,PixelAspectRatio_DICOM,SpatialResolution_DICOM,BitsStored_DICOM,"
    "WindowCenter_DICOM,WindowWidth_DICOM,Rows_DICOM,Columns_DICOM,XRayTubeCurrent_DICOM,Exposure_DICOM,"
    "ExposureInuAs_DICOM,ExposureTime,RelativeXRayExposure_DICOM,ReportID,Report,MethodLabel,Labels,"
    "Localizations,LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS"
)


def padchest_row(index, image, folder, projection, method, labels):
    fields = [str(index), image, str(folder), "20140915", "s1", "p1", "1939.0", "M", "POSTEROANTERIOR",
              projection, "Manual review of DICOM fields", "No", "CR", "Philips", "MONOCHROME2", "0",
              "1", "0.139", "12", "2048", "4096", "2000", "1800", "", "", "", "", "", "4765777",
              '"cardiomegaly. pleural effusion."', method, f'"{labels}"', '"[]"', '"[]"', '"[]"',
              '"[]"']  # fmt: skip
    return ",".join(fields)


PADCHEST_ROWS = [
    # brackets, quotes, a leading space and an empty item, as in the released strings
    padchest_row(0, "a.png", 0, "PA", "Physician", "['pleural effusion', ' cardiomegaly', '']"),
    padchest_row(1, "b.png", 0, "AP_horizontal", "Physician", "['normal']"),
    padchest_row(2, "c.png", 1, "PA", "RNN_model", "['pneumonia']"),  # not physician-labelled: out
    padchest_row(3, "d.png", 1, "L", "Physician", "['nodule']"),  # lateral: out
    padchest_row(4, "e.png", 1, "AP", "Physician", "['unchanged', 'cardiomegaly']"),
    padchest_row(5, "f.png", 1, "PA", "Physician", "['exclude']"),
]


def write_padchest(root, header=PADCHEST_HEADER):
    path = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    path.write_text("\n".join([header, *PADCHEST_ROWS]) + "\n")
    for image, folder in (("a.png", 0), ("b.png", 0), ("e.png", 1), ("f.png", 1)):
        grey_png(root / str(folder) / image)


def test_padchest_released_header_and_label_strings_reference_filtering(tmp_path):
    write_padchest(tmp_path)
    test = load_padchest(tmp_path)
    # the reference removes only `normal`: `unchanged` and `exclude` stay classes
    assert test.class_names == ["cardiomegaly", "exclude", "pleural effusion", "unchanged"]
    assert [p.name for p in test.image_paths] == ["a.png", "b.png", "e.png", "f.png"]
    assert test.labels.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0]]
    ours = load_padchest(tmp_path, exclude=("normal", "exclude", "suboptimal study", "unchanged"))
    assert ours.class_names == ["cardiomegaly", "pleural effusion"]


@pytest.mark.parametrize("column", ["ImageID", "Labels", "MethodLabel", "Projection"])
def test_padchest_renamed_column_is_an_error(tmp_path, column):
    write_padchest(tmp_path, PADCHEST_HEADER.replace(f",{column},", f",{column}_x,"))
    with pytest.raises(MedzooDataError, match=column):
        load_padchest(tmp_path)


# ------------------------------------------------------------------------------------------------- OpenI

OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old with cough.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""


def openi_report(n, mesh, image_ids, findings="See impression.", impression="As above."):
    images = "\n".join(
        f'   <parentImage id="{i}">\n      <figureId>F{k + 1}</figureId>\n      <caption>Xray Chest PA and '
        f'Lateral</caption>\n      <panel type="single">\n         <url>/hadoop/storage/radiology/extract/'
        f"{i}.jpg</url>\n      </panel>\n   </parentImage>"
        for k, i in enumerate(image_ids)
    )
    body = "\n".join(f"      <{tag}>{term}</{tag}>" for tag, term in mesh)
    return OPENI_XML.format(n=n, findings=findings, impression=impression, mesh=body, images=images)


OPENI_REPORTS = {
    1: ([("major", "Calcified Granuloma/lung/upper lobe/right"), ("major", "Opacity/lung/base/left/mild"),
         ("automatic", "calcified granuloma"), ("automatic", "pulmonary atelectasis"),
         ("automatic", "Infiltrate")],
        ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
    2: ([("major", "Pleural Effusion/right"), ("major", "Thickening/pleura"),
         ("automatic", "pleural effusion"), ("automatic", "pleural thickening"),
         ("automatic", "lung lesion")],
        ["CXR2_1_IM-0652-1001"]),
    3: ([("major", "normal")], ["CXR3_1_IM-1384-1001"]),
}  # fmt: skip


def write_openi(root, rename_automatic=False):
    folder = root / "ecgen-radiology"
    folder.mkdir(parents=True)
    for n, (mesh, ids) in OPENI_REPORTS.items():
        text = openi_report(n, mesh, ids)
        if rename_automatic:
            text = text.replace("automatic>", "automatic_terms>")
        (folder / f"{n}.xml").write_text(text)
        for image in ids:
            grey_png(root / "NLMCXR_png" / f"{image}.png")


def test_openi_reference_labels_from_automatic_terms_known_answer(tmp_path):
    write_openi(tmp_path)
    test = load_openi(tmp_path)
    protocol = openi_reference_protocol()
    assert test.class_names == protocol["classes"] and len(test.class_names) == 18
    assert "Consolidation" not in test.class_names
    positive = [sorted(n for n, v in zip(test.class_names, row, strict=True) if v) for row in test.labels]
    # Report 1: "calcified granuloma" is also a Granuloma (substring), "pulmonary atelectasis" an
    # Atelectasis, "Infiltrate" an Infiltration (synonym, case-insensitive); the <major> Opacity is not read.
    report_1 = ["Atelectasis", "Calcified Granuloma", "Granuloma", "Infiltration"]
    # Report 2: "pleural effusion" is an Effusion (substring), "pleural thickening" a Pleural_Thickening
    # (synonym), "lung lesion" a Lesion.
    report_2 = ["Effusion", "Lesion", "Pleural_Thickening"]
    assert positive == [report_1, report_1, report_2, []]
    assert [p.name for p in test.image_paths] == [
        "CXR1_1_IM-0001-3001.png", "CXR1_1_IM-0001-4001.png", "CXR2_1_IM-0652-1001.png",
        "CXR3_1_IM-1384-1001.png",
    ]  # fmt: skip


def test_openi_mesh_major_variant_reads_major_terms(tmp_path):
    write_openi(tmp_path)
    test = load_openi(tmp_path, labels="mesh_major")
    named = [sorted(n for n, v in zip(test.class_names, row, strict=True) if v) for row in test.labels]
    assert named == [["Opacity"], ["Opacity"], ["Pleural Effusion"], []]
    with pytest.raises(MedzooDataError, match="labels"):
        load_openi(tmp_path, labels="majors")


def test_openi_renamed_automatic_tag_is_an_error(tmp_path):
    write_openi(tmp_path, rename_automatic=True)
    with pytest.raises(MedzooDataError, match="<automatic>"):
        load_openi(tmp_path)


def test_openi_matching_table_known_answers():
    synonyms = openi_reference_protocol()["synonyms"]
    assert synonyms == {
        "Pleural_Thickening": ["pleural thickening"],
        "Infiltration": ["infiltrate"],
        "Atelectasis": ["atelectases"],
    }
    names = ["Atelectasis", "Hernia", "Granuloma", "Calcified Granuloma"]
    row = openi_labels_from_terms(["Atelectases, bilateral", "hernia, hiatal", " "], names, synonyms)
    assert row.tolist() == [1, 1, 0, 0]


# ----------------------------------------------------------------------------------------- ChestX-Det10

CHESTXDET10_RECORDS = [
    {"file_name": "36199.png", "syms": ["Atelectasis", "Effusion", "Effusion"],
     "boxes": [[236, 308, 386, 455], [107, 464, 236, 560], [604, 476, 739, 580]]},
    {"file_name": "36204.png", "syms": [], "boxes": []},
    {"file_name": "36207.png", "syms": ["Calcification"], "boxes": [[311, 219, 341, 247]]},
]  # fmt: skip


@pytest.mark.parametrize("renamed", [None, "syms", "file_name"])
def test_chestxdet10_released_keys_and_renamed_key(tmp_path, renamed):
    records = [{(k + "_x" if k == renamed else k): v for k, v in r.items()} for r in CHESTXDET10_RECORDS]
    (tmp_path / "test.json").write_text(json.dumps(records))
    for record in CHESTXDET10_RECORDS:
        grey_png(tmp_path / "test_data" / record["file_name"])
    if renamed:
        with pytest.raises(MedzooDataError, match=renamed):
            load_chestxdet10(tmp_path)
        return
    test = load_chestxdet10(tmp_path)
    expected = np.zeros((3, 10))
    expected[0, [CHESTXDET10_CLASSES.index("Atelectasis"), CHESTXDET10_CLASSES.index("Effusion")]] = 1
    expected[2, CHESTXDET10_CLASSES.index("Calcification")] = 1
    np.testing.assert_array_equal(test.labels, expected)
