"""CT report/VQA data: CT-RATE and BIMCV-R layouts, the instruction-data builder, MONAI CT transforms,
tokenisation with the loss masked to answer tokens, and the synthetic demo set (in the CT-RATE layout).

Preprocessing (E3D-GPT gives no exact recipe; see the README): orientation RAS, optional resampling to
``spacing`` mm, HU window ``hu_range`` (default [-1000, 1000]) scaled to [0, 1], resize to ``img_size``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from monai import transforms as mt
from torch.utils.data import Dataset

from medzoo.errors import MedzooDataError
from medzoo.io import read_volume, write_csv, write_text
from medzoo.lightning import MedzooDataModule, seeded_split

IGNORE_INDEX = -100
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# The 18 abnormality columns of CT-RATE's multi_abnormality_labels CSVs.
CT_RATE_ABNORMALITIES = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)  # fmt: skip

REPORT_QUESTION = "Write the radiology report for this CT scan."
CLOSED_QUESTION = "Is there evidence of {finding}?"
OPEN_QUESTION = "Which abnormalities are present?"
PROMPT_TEMPLATE = "<image>\nQuestion: {question}\nAnswer:"
TASKS = ("report", "closed_vqa", "open_vqa")


@dataclass
class CTCase:
    """One CT volume with its report, binary abnormality labels and official split ("train" or "test")."""

    volume: str
    report: str
    labels: dict[str, int] = field(default_factory=dict)
    split: str = "train"


# ---------------------------------------------------------------------------------------------- layouts


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "the CSV of the dataset's official layout")
    return pd.read_csv(path)


def _report_text(row: pd.Series, columns: Sequence[str]) -> str:
    parts = [str(row[c]).strip() for c in columns if c in row and isinstance(row[c], str) and row[c].strip()]
    return " ".join(parts)


def read_ct_rate(
    root: str | os.PathLike, report_columns: Sequence[str] = ("Findings_EN", "Impressions_EN")
) -> list[CTCase]:
    """CT-RATE as released (``root`` is the dataset folder or the folder holding ``dataset/``)::

        dataset/train/train_1/train_1_a/train_1_a_1.nii.gz          volumes: <split>_<patient>_<scan>_<recon>
        dataset/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz
        dataset/radiology_text_reports/train_reports.csv    VolumeName, ..., Findings_EN, Impressions_EN
        dataset/radiology_text_reports/validation_reports.csv
        dataset/multi_abnormality_labels/train_predicted_labels.csv VolumeName + 18 binary columns
        dataset/multi_abnormality_labels/valid_predicted_labels.csv

    The official ``valid`` split is read as ``test``. Volumes listed in a CSV but absent on disk (a partial
    download) are skipped with a warning; none at all is an error.
    """
    root = Path(root)
    base = root / "dataset" if (root / "dataset").is_dir() else root
    cases: list[CTCase] = []
    for folder, report_csv, label_csv, split in (
        ("train", "train_reports.csv", "train_predicted_labels.csv", "train"),
        ("valid", "validation_reports.csv", "valid_predicted_labels.csv", "test"),
    ):
        if not (base / folder).is_dir():
            continue
        reports = _read_table(base / "radiology_text_reports" / report_csv)
        labels = _read_table(base / "multi_abnormality_labels" / label_csv).set_index("VolumeName")
        findings = [c for c in labels.columns if c != "VolumeName"]
        missing = 0
        for _, row in reports.iterrows():
            name = str(row["VolumeName"])
            stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name
            parts = stem.split("_")  # train, 1, a, 1
            path = base / folder / "_".join(parts[:2]) / "_".join(parts[:3]) / name
            if not path.is_file():
                missing += 1
                continue
            if name not in labels.index:
                raise MedzooDataError(base / "multi_abnormality_labels" / label_csv, f"no row for {name}",
                                      "one label row per volume of the reports CSV")  # fmt: skip
            label_row = labels.loc[name]
            cases.append(
                CTCase(
                    volume=str(path),
                    report=_report_text(row, report_columns),
                    labels={f: int(label_row[f]) for f in findings},
                    split=split,
                )
            )
        if missing:
            warnings.warn(f"{base / folder}: {missing} volumes of {report_csv} not on disk", stacklevel=2)
    if not cases:
        raise MedzooDataError(base, "no CT-RATE volumes with reports",
                              "dataset/{train,valid}/ volumes + radiology_text_reports/*.csv")  # fmt: skip
    return cases


def read_bimcv_r(root: str | os.PathLike) -> list[CTCase]:
    """BIMCV-R as a manifest of volume/report pairs (``root`` holds one of):

    - ``dataset.json``: a list of ``{"image": path, "text": report[, "split": "train"|"test"]}``
      (paths relative to ``root``), the form used by 3D CT report corpora such as M3D-Cap;
    - ``reports.csv``: columns ``volume``, ``report`` and optionally ``split`` and binary label columns.

    BIMCV-R carries no abnormality labels, so only report and open tasks come from it unless the CSV adds
    label columns. Entries without a split are ``train``.
    """
    root = Path(root)
    manifest, table = root / "dataset.json", root / "reports.csv"
    rows: list[dict[str, Any]]
    if manifest.is_file():
        try:
            rows = [{"volume": e["image"], "report": e["text"], "split": e.get("split", "train")}
                    for e in json.loads(manifest.read_text())]  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise MedzooDataError(manifest, f"unreadable entries ({error})",
                                  'a JSON list of {"image": path, "text": report}') from None  # fmt: skip
        label_columns: list[str] = []
    elif table.is_file():
        frame = _read_table(table)
        for column in ("volume", "report"):
            if column not in frame:
                raise MedzooDataError(table, f"columns {list(frame.columns)}", f"a {column!r} column")
        label_columns = [c for c in frame.columns if c not in ("volume", "report", "split")]
        rows = frame.to_dict("records")
    else:
        raise MedzooDataError(root, "neither dataset.json nor reports.csv", "a BIMCV-R manifest")
    cases = []
    for row in rows:
        split = str(row.get("split") or "train")
        split = {"valid": "test", "validation": "test", "validate": "val"}.get(split, split)
        report = row["report"] if isinstance(row["report"], str) else ""
        labels = {c: int(row[c]) for c in label_columns}
        cases.append(CTCase(str((root / str(row["volume"])).resolve()), report, labels, split))
    return cases


LAYOUTS: dict[str, Callable[[Path], list[CTCase]]] = {"ct-rate": read_ct_rate, "bimcv-r": read_bimcv_r}


# ----------------------------------------------------------------------------------- instruction data


def build_instructions(
    cases: Sequence[CTCase],
    tasks: Sequence[str] = TASKS,
    findings: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Turn reports and labels into instruction samples (one dict per question/answer pair).

    - ``report``: REPORT_QUESTION -> the report;
    - ``closed_vqa``: "Is there evidence of <finding>?" -> "yes" / "no", one per finding (``target`` 1 / 0);
    - ``open_vqa``: OPEN_QUESTION -> the positive findings, lower case, comma-separated, or "none".

    Each sample: ``volume, task, question, answer, finding ("" if none), target (-1 if none), case``.

    Raises:
        MedzooDataError: an empty report (report task), an unknown task, or a finding missing from a case.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise MedzooDataError("tasks", repr(unknown), f"tasks among {TASKS}")
    samples = []
    for i, case in enumerate(cases):
        names = list(case.labels) if findings is None else list(findings)
        absent = [f for f in names if f not in case.labels]
        if absent and ("closed_vqa" in tasks or "open_vqa" in tasks):
            raise MedzooDataError(case.volume, f"no label for {absent}", "a label for every finding")

        def sample(
            task: str, question: str, answer: str, finding: str = "", target: int = -1, i=i, case=case
        ):
            return {"volume": case.volume, "task": task, "question": question, "answer": answer,
                    "finding": finding, "target": target, "case": i}  # fmt: skip

        if "report" in tasks:
            if not case.report.strip():
                raise MedzooDataError(case.volume, "an empty report", "non-empty report text")
            samples.append(sample("report", REPORT_QUESTION, case.report.strip()))
        if "closed_vqa" in tasks:
            for f in names:
                answer = "yes" if case.labels[f] else "no"
                samples.append(sample("closed_vqa", CLOSED_QUESTION.format(finding=f.lower()), answer, f,
                                      int(case.labels[f])))  # fmt: skip
        if "open_vqa" in tasks and names:
            positives = [f.lower() for f in names if case.labels[f]]
            samples.append(sample("open_vqa", OPEN_QUESTION, ", ".join(positives) or "none"))
    return samples


def write_jsonl(path: str | os.PathLike, samples: Sequence[dict[str, Any]]) -> Path:
    """Write instruction samples as JSON lines (atomic)."""
    return write_text(path, "".join(json.dumps(s) + "\n" for s in samples))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read instruction samples written by :func:`write_jsonl` (fields checked)."""
    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a JSONL file of instruction samples")
    samples = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as error:
            raise MedzooDataError(
                f"{path}:{n}", f"invalid JSON ({error.msg})", "one JSON object per line"
            ) from None
        for key in ("volume", "question", "answer"):
            if not isinstance(sample.get(key), str) or not sample[key].strip():
                raise MedzooDataError(f"{path}:{n}", f"{key}={sample.get(key)!r}", f"a non-empty {key!r}")
        sample.setdefault("task", "open_vqa")
        sample.setdefault("finding", "")
        sample.setdefault("target", -1)
        samples.append(sample)
    return samples


# ----------------------------------------------------------------------------------------- tokenising


def format_prompt(question: str, template: str = PROMPT_TEMPLATE) -> str:
    """The prompt fed to the LM; ``template`` must hold ``<image>`` and ``{question}``."""
    if "<image>" not in template:
        raise MedzooDataError("prompt_template", repr(template), "a template holding the <image> placeholder")
    return template.format(question=question)


def tokenize_conversations(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[str] | None = None, max_length: int = 512
) -> dict[str, torch.Tensor]:
    """Token ids for training (``answers`` given) or generation (``answers`` None).

    Training: prompt ids + ids of " <answer>" + eos, right-padded; ``labels`` copy the answer and eos ids
    and hold IGNORE_INDEX on the prompt and the padding, so the loss covers answer tokens only. An answer
    longer than the room left by ``max_length`` is truncated.
    Generation: prompt ids, left-padded (the model continues each row at its right end).

    Returns ``input_ids``, ``attention_mask`` (B, L) and, for training, ``labels`` (B, L).

    Raises:
        MedzooDataError: an empty answer, or a prompt longer than ``max_length``.
    """
    rows, targets = [], []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if len(ids) >= max_length:
            raise MedzooDataError(f"prompt {i}", f"{len(ids)} tokens", f"fewer than max_length={max_length}")
        if answers is None:
            rows.append(ids)
            continue
        answer = answers[i]
        if not isinstance(answer, str) or not answer.strip():
            raise MedzooDataError(f"answer {i}", repr(answer), "a non-empty answer/report")
        answer_ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
        answer_ids = [*answer_ids, tokenizer.eos_token_id][: max_length - len(ids)]
        rows.append(ids + answer_ids)
        targets.append([IGNORE_INDEX] * len(ids) + answer_ids)
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if answers is not None else slice(length - len(row), length)
        input_ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
        if answers is not None:
            labels[i, span] = torch.tensor(targets[i])
    out = {"input_ids": input_ids, "attention_mask": mask}
    if answers is not None:
        out["labels"] = labels
    return out


# ----------------------------------------------------------------------------------------- transforms


class LoadCTVolumed(mt.MapTransform):
    """Read a CT volume (NIfTI, DICOM series folder, MHA/NRRD) with ``medzoo.io.read_volume`` into a
    channel-first MetaTensor carrying its affine. Raises MedzooDataError for a volume that is not 3D."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor

        out = dict(data)
        for key in self.key_iterator(out):
            volume = read_volume(out[key])
            if volume.array.ndim != 3 or min(volume.array.shape) < 2:
                raise MedzooDataError(volume.path, f"an array of shape {volume.array.shape}",
                                      "a 3D volume (X, Y, Z) with >= 2 voxels per axis")  # fmt: skip
            array = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None]
            meta = {"filename_or_obj": str(volume.path)}
            out[key] = MetaTensor(
                array, affine=torch.as_tensor(volume.affine, dtype=torch.float64), meta=meta
            )
        return out


def ct_transforms(
    img_size: Sequence[int] = (256, 256, 128),
    hu_range: Sequence[float] = (-1000.0, 1000.0),
    spacing: Sequence[float] | None = None,
) -> mt.Compose:
    """MONAI pipeline: load -> RAS -> (spacing) -> HU window to [0, 1] -> resize to ``img_size``.

    Output ``{"image": (1, X, Y, Z) float32 tensor in [0, 1]}``.
    """
    steps: list[Any] = [
        LoadCTVolumed("image"),
        mt.Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if spacing is not None:
        steps.append(mt.Spacingd("image", pixdim=tuple(spacing), mode="bilinear"))
    steps += [
        mt.ScaleIntensityRanged(
            "image", a_min=hu_range[0], a_max=hu_range[1], b_min=0.0, b_max=1.0, clip=True
        ),
        mt.Resized("image", spatial_size=tuple(img_size), mode="trilinear", anti_aliasing=False),
        mt.EnsureTyped("image", track_meta=False, dtype=torch.float32),
    ]
    return mt.Compose(steps)


class VolumeLoader:
    """Preprocessed volumes by path, optionally cached on disk (``cache_dir``: tensors saved with
    torch.save and read back with ``weights_only=True``, keyed by path, size and the preprocessing)."""

    def __init__(
        self, transform: mt.Compose, cache_dir: str | os.PathLike | None = None, key: str = ""
    ) -> None:
        self.transform, self.key = transform, key
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    def __call__(self, path: str) -> torch.Tensor:
        cached = None
        if self.cache_dir is not None:
            stat = Path(path).stat() if Path(path).is_file() else None
            digest = hashlib.sha1(f"{path}|{stat and stat.st_size}|{self.key}".encode()).hexdigest()
            cached = self.cache_dir / f"{digest}.pt"
            if cached.is_file():
                return torch.load(cached, map_location="cpu", weights_only=True)
        try:
            image = self.transform({"image": path})["image"]
        except Exception as error:  # undo MONAI's wrapping so a bad file raises its own MedzooDataError
            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, MedzooDataError):
                cause = cause.__cause__ or cause.__context__
            raise (cause or error) from None
        if cached is not None:
            from medzoo.io import atomic_path

            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp:
                torch.save(image, tmp)
        return image


class InstructionDataset(Dataset):
    """Instruction samples with their preprocessed volumes.

    Item: ``image`` (1, X, Y, Z) in [0, 1]; ``question``, ``answer``, ``task``, ``finding`` (str);
    ``target`` (int, 1/0 for closed VQA else -1); ``index`` (int).
    """

    def __init__(self, samples: Sequence[dict[str, Any]], loader: VolumeLoader) -> None:
        self.samples, self.loader = list(samples), loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        return {"image": self.loader(s["volume"]), "question": s["question"], "answer": s["answer"],
                "task": s["task"], "finding": s["finding"], "target": int(s["target"]), "index": index,
                "path": s["volume"]}  # fmt: skip


class VolumeDataset(Dataset):
    """Volumes only (MAE pre-training, prediction): ``image`` (1, X, Y, Z), ``path``, ``index``."""

    def __init__(self, paths: Sequence[str], loader: VolumeLoader) -> None:
        self.paths, self.loader = [str(p) for p in paths], loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.loader(self.paths[index]), "path": self.paths[index], "index": index}


# ------------------------------------------------------------------------------------------ demo data

DEMO_FINDINGS = ("Lesion", "Left lesion", "Right lesion", "Large lesion")
DEMO_SHAPE = (64, 64, 32)
DEMO_SPACING = (1.0, 1.0, 2.0)  # the paper's 1 : 1 : 2 in-plane : slice resolution
LESION_HU = 500.0


def demo_report(present: bool, side: str = "", size: str = "") -> str:
    """The demo's templated report: what the image shows (presence, side, size of a lesion)."""
    tail = "The liver, spleen and kidneys are unremarkable."
    if not present:
        return f"No focal lesion is seen. {tail}"
    return f"A {size} hyperdense lesion is seen on the {side} side. {tail}"


def render_demo_case(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int], str]:
    """A synthetic CT volume (medzoo.synthetic) with or without a hyperdense lesion, its labels and report.

    Two thirds of the volumes carry one spherical lesion (500 HU) on the patient's left (-x in RAS) or right,
    small (radius 12% of the body width) or large (24%). Returns (hu (64, 64, 32) int16, labels, report).
    """
    from medzoo.synthetic import render_ct_volume

    hu, _ = render_ct_volume(rng, DEMO_SHAPE, num_organs=4)
    present = bool(rng.random() < 2 / 3)
    side, size = ("left" if rng.random() < 0.5 else "right"), ("small" if rng.random() < 0.5 else "large")
    if present:
        axes = [np.linspace(-1.0, 1.0, n) for n in DEMO_SHAPE]
        x, y, z = np.meshgrid(*axes, indexing="ij")
        cx = (-1 if side == "left" else 1) * rng.uniform(0.35, 0.5)
        cy, cz = rng.uniform(-0.1, 0.25), rng.uniform(-0.4, 0.4)
        radius = 0.12 if size == "small" else 0.24
        # Radii in normalised units; z spans half the physical length of x and y (2 mm slices), so the
        # sphere's z radius is doubled in normalised units to stay round in millimetres.
        inside = ((x - cx) / radius) ** 2 + ((y - cy) / radius) ** 2 + ((z - cz) / (2 * radius)) ** 2 < 1
        hu = hu.astype(np.float32)
        hu[inside] = LESION_HU + 8.0 * rng.standard_normal(int(inside.sum()))
        hu = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    labels = {
        "Lesion": int(present),
        "Left lesion": int(present and side == "left"),
        "Right lesion": int(present and side == "right"),
        "Large lesion": int(present and size == "large"),
    }
    return hu, labels, demo_report(present, side, size)


def make_demo_dataset(root: str | os.PathLike, n_train: int = 48, n_test: int = 16, seed: int = 0) -> Path:
    """Write the synthetic demo set in the CT-RATE layout (see :func:`read_ct_rate`); returns ``root``.

    Volume ``i`` depends only on ``(seed, i)``; a finished set (``.complete`` marker) is not rewritten.
    """
    from medzoo.io import write_volume
    from medzoo.synthetic.ct import ras_affine

    root = Path(root)
    if (root / ".complete").is_file():
        return root
    base = root / "dataset"
    affine = ras_affine(DEMO_SHAPE, DEMO_SPACING)
    children = np.random.SeedSequence(seed).spawn(n_train + n_test)
    for folder, report_csv, label_csv, start, count in (
        ("train", "train_reports.csv", "train_predicted_labels.csv", 0, n_train),
        ("valid", "validation_reports.csv", "valid_predicted_labels.csv", n_train, n_test),
    ):
        reports, labels = [], []
        for k in range(count):
            hu, case_labels, report = render_demo_case(np.random.default_rng(children[start + k]))
            name = f"{folder}_{k + 1}_a_1.nii.gz"
            write_volume(base / folder / f"{folder}_{k + 1}" / f"{folder}_{k + 1}_a" / name, hu, affine)
            reports.append({"VolumeName": name, "ClinicalInformation_EN": "Synthetic.", "Technique_EN": "",
                            "Findings_EN": report, "Impressions_EN": ""})  # fmt: skip
            labels.append({"VolumeName": name, **case_labels})
        write_csv(base / "radiology_text_reports" / report_csv, pd.DataFrame(reports))
        write_csv(base / "multi_abnormality_labels" / label_csv, pd.DataFrame(labels))
    write_text(root / ".complete", f"n_train={n_train} n_test={n_test} seed={seed}\n")
    return root


def demo_corpus() -> list[str]:
    """Every text the demo's LM may see, as it sees it (prompt + " " + answer): its tokenizer is trained on
    these, so " yes", " no" and the report words are single tokens."""
    reports = [demo_report(False)] + [
        demo_report(True, s, z) for s in ("left", "right") for z in ("small", "large")
    ]
    texts = [f"{format_prompt(REPORT_QUESTION)} {r}" for r in reports]
    for finding in DEMO_FINDINGS:
        texts += [
            f"{format_prompt(CLOSED_QUESTION.format(finding=finding.lower()))} {a}" for a in ("yes", "no")
        ]
    names = [f.lower() for f in DEMO_FINDINGS]
    texts += [f"{format_prompt(OPEN_QUESTION)} {a}" for a in ("none", ", ".join(names), names[0])]
    return texts


# ------------------------------------------------------------------------------------------ datamodule


class CTVLMDataModule(MedzooDataModule):
    """CT volumes with reports for MAE pre-training (``task="pretrain"``) or instruction tuning
    (``task="instruct"``).

    Batches (instruct): ``image`` (B, 1, X, Y, Z) in [0, 1]; ``question``, ``answer``, ``task``,
    ``finding``, ``path`` (lists of str); ``target`` (B,) long (closed VQA 1/0, else -1); ``index`` (B,).
    Batches (pretrain, predict): ``image``, ``path``, ``index``.

    Args:
        root: dataset folder in ``layout``. None: the synthetic demo set (CT-RATE layout) generated into
            ``$MEDZOO_CACHE/ct-vlm/``.
        layout: "ct-rate" or "bimcv-r" (see :data:`LAYOUTS`).
        task: "instruct" or "pretrain".
        img_size, hu_range, spacing: preprocessing (see :func:`ct_transforms`).
        tasks: instruction tasks built from reports and labels (report, closed_vqa, open_vqa).
        label_columns: label columns asked about in VQA (None: all of the layout's label columns).
        instructions: a JSONL of instruction samples (:func:`write_jsonl`) used for training instead of
            building them; the official test split is still built from the layout.
        val_fraction: share of the training cases held out for validation (seeded, by case).
        synthetic_train, synthetic_test: demo volumes when ``root`` is None.
        cache_dir: optional cache of preprocessed volumes.
        predict_root: NIfTI file or folder for ``predict`` (default: the test split's volumes).
    """

    def __init__(
        self,
        root: str | None = None,
        layout: Literal["ct-rate", "bimcv-r"] = "ct-rate",
        task: Literal["instruct", "pretrain"] = "instruct",
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        img_size: tuple[int, int, int] = (256, 256, 128),
        hu_range: tuple[float, float] = (-1000.0, 1000.0),
        spacing: tuple[float, float, float] | None = None,
        tasks: list[str] | None = None,
        label_columns: list[str] | None = None,
        instructions: str | None = None,
        val_fraction: float = 0.1,
        synthetic_train: int = 48,
        synthetic_test: int = 16,
        cache_dir: str | None = None,
        predict_root: str | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, seed, predict_root, cache_dir)
        self.save_hyperparameters()  # checkpoints record the preprocessing, for `generate` and `evaluate`
        if layout not in LAYOUTS:
            raise MedzooDataError("data.layout", repr(layout), f"one of {sorted(LAYOUTS)}")
        if task not in ("instruct", "pretrain"):
            raise MedzooDataError("data.task", repr(task), "'instruct' or 'pretrain'")
        self.layout, self.task = layout, task
        self.img_size, self.hu_range = tuple(img_size), tuple(hu_range)
        self.spacing = None if spacing is None else tuple(spacing)
        self.tasks = list(TASKS if tasks is None else tasks)
        self.label_columns = None if label_columns is None else list(label_columns)
        self.instructions, self.val_fraction = instructions, val_fraction
        self.synthetic_train, self.synthetic_test = synthetic_train, synthetic_test

    def dataset_root(self) -> Path:
        if self.root is not None:
            return Path(self.root)
        folder = self.demo_dir() / f"synthetic-ct-rate-{self.synthetic_train}-{self.synthetic_test}"
        return make_demo_dataset(folder, self.synthetic_train, self.synthetic_test, seed=0)

    def prepare_data(self) -> None:
        self.dataset_root()  # generates the demo set once, in the main process

    def volume_loader(self) -> VolumeLoader:
        key = f"{self.img_size}|{self.hu_range}|{self.spacing}"
        return VolumeLoader(ct_transforms(self.img_size, self.hu_range, self.spacing), self.cache_dir, key)

    def cases(self) -> dict[str, list[CTCase]]:
        """The cases of each split: seeded val from the official training cases; official test."""
        cases = LAYOUTS[self.layout](self.dataset_root())
        train = [c for c in cases if c.split == "train"]
        test = [c for c in cases if c.split == "test"]
        val = [c for c in cases if c.split == "val"]
        if not val and len(train) > 1:
            n_val = max(1, round(len(train) * self.val_fraction))
            fit_idx, val_idx = seeded_split(
                len(train), (1 - n_val / len(train), n_val / len(train)), self.seed
            )
            train, val = [train[i] for i in fit_idx], [train[i] for i in val_idx]
        return {"train": train, "val": val or train, "test": test}

    def setup(self, stage: str | None = None) -> None:
        splits, loader = self.cases(), self.volume_loader()
        if self.task == "pretrain":
            self.datasets = {k: VolumeDataset([c.volume for c in v], loader) for k, v in splits.items()}
            return
        samples = {k: build_instructions(v, self.tasks, self.label_columns) for k, v in splits.items()}
        if self.instructions is not None:
            samples["train"] = read_jsonl(self.instructions)
        self.datasets = {k: InstructionDataset(v, loader) for k, v in samples.items()}

    def train_dataloader(self):
        return self.train_loader(self.datasets["train"])

    def val_dataloader(self):
        return self.eval_loader(self.datasets["val"])

    def test_dataloader(self):
        if not len(self.datasets["test"]):
            raise MedzooDataError(self.dataset_root(), "no test split", "official test/valid volumes")
        return self.eval_loader(self.datasets["test"])

    def predict_dataloader(self):
        if self.predict_root is None:
            paths = sorted({c.volume for c in self.cases()["test"]})
        else:
            paths = [str(p) for p in self.predict_files(NIFTI_SUFFIXES)]
        return self.eval_loader(VolumeDataset(paths, self.volume_loader()))
