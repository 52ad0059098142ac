"""Chest-X-ray-like images with long-tailed multi-labels and short reports.

Every image is a frontal chest radiograph cartoon (thorax, two dark lung fields, heart, spine, clavicles and
ribs) with one visible, class-specific pattern per positive finding: a dense band for atelectasis, a wide
heart for cardiomegaly, a fluid level with a meniscus for effusion, scattered dots for nodules, a
hyperlucent rim with a pleural line for pneumothorax, and so on, each in its typical place. A classifier or
a vision-language model can therefore learn every class from the pixels, and the report names exactly the
positive findings.

Label frequencies follow a Zipf-like law over the classes' frequency ranks, as ChestX-ray14 does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import ndimage, special

from medzoo.io import write_csv, write_png, write_text
from medzoo.synthetic._render import segment_distance, smooth_noise, to_uint8

__all__ = ["NIH_FINDINGS", "NIH_FREQUENCY_RANK", "make_cxr_dataset", "render_cxr", "write_cxr_report"]

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 ChestX-ray14 finding names, in the dataset's (alphabet-like) column order."""

NIH_FREQUENCY_RANK: dict[str, int] = {
    name: rank
    for rank, name in enumerate(
        (
            "Infiltration",
            "Effusion",
            "Atelectasis",
            "Nodule",
            "Mass",
            "Pneumothorax",
            "Consolidation",
            "Pleural_Thickening",
            "Cardiomegaly",
            "Emphysema",
            "Edema",
            "Fibrosis",
            "Pneumonia",
            "Hernia",
        )
    )
}
"""0 = most frequent; the order of the label counts in the real Data_Entry_2017 table."""

NO_FINDING = "No Finding"

# Normalised image coordinates: u = column / W, v = row / H, both in [0, 1]. "Right" means the patient's
# right, which a frontal radiograph shows on the image's left.
_LUNG_CENTERS = {"right": (0.31, 0.46), "left": (0.69, 0.46)}
_LUNG_RADII = (0.145, 0.28)


class _Chest:
    """The grids, masks and anatomy parameters of one image, shared by the finding painters."""

    def __init__(
        self,
        rng: np.random.Generator,
        size: tuple[int, int],
        findings: set[str],
        view: str,
        finding_contrast: float = 1.0,
    ) -> None:
        height, width = size
        self.rng = rng
        self.v, self.u = np.mgrid[0:height, 0:width].astype(np.float64)
        self.u = (self.u + 0.5) / width
        self.v = (self.v + 0.5) / height
        self.size = size
        shift = rng.normal(0.0, 0.012, 2)
        lung_scale = rng.uniform(0.94, 1.06, 2)
        if "Emphysema" in findings:  # hyperinflated lungs push the diaphragm down
            lung_scale[1] *= 1.0 + 0.12 * finding_contrast  # exactly 1.12 at contrast 1
        self.lungs = {
            side: (
                (center[0] + shift[0], center[1] + shift[1] + (lung_scale[1] - 1) * 0.15),
                (_LUNG_RADII[0] * lung_scale[0], _LUNG_RADII[1] * lung_scale[1]),
            )
            for side, center in _LUNG_CENTERS.items()
        }
        heart_width = 0.115 * rng.uniform(0.95, 1.05) * (1.08 if view == "AP" else 1.0)
        if "Cardiomegaly" in findings:
            heart_width *= 1.0 + 0.55 * finding_contrast  # exactly 1.55 at contrast 1
        self.heart = ((0.54 + shift[0], 0.63 + shift[1]), (heart_width, 0.105))

    def ellipse(
        self, center: Sequence[float], radii: Sequence[float], edge: float = 0.08, angle: float = 0.0
    ) -> np.ndarray:
        """Soft ellipse mask in [0, 1]; ``edge`` is the blur width as a fraction of the radius."""
        cos, sin = math.cos(angle), math.sin(angle)
        du, dv = self.u - center[0], self.v - center[1]
        a = (cos * du + sin * dv) / radii[0]
        b = (-sin * du + cos * dv) / radii[1]
        return special.expit((1.0 - np.sqrt(a**2 + b**2)) / edge)

    def lung(self, side: str, edge: float = 0.05) -> np.ndarray:
        return self.ellipse(*self.lungs[side], edge=edge)

    def lung_point(self, side: str, du: float, dv: float) -> tuple[float, float]:
        """A point inside a lung given in units of its radii (du lateral-positive, dv down-positive)."""
        (cu, cv), (ru, rv) = self.lungs[side]
        lateral = -1.0 if side == "right" else 1.0
        return cu + lateral * du * ru, cv + dv * rv

    def side(self) -> str:
        return str(self.rng.choice(["right", "left"]))


def _render_anatomy(chest: _Chest) -> np.ndarray:
    """The normal chest: soft tissue, dark lungs with rib shadows, heart, spine and clavicles, in [0, 1]."""
    u, v, rng = chest.u, chest.v, chest.rng
    image = 0.12 + 0.42 * chest.ellipse((0.5, 0.6), (0.47, 0.6), edge=0.04)
    lungs = chest.lung("right") + chest.lung("left")
    # Ribs: parabolic arcs sloping down laterally, visible as faint bright bands over the lung fields.
    ribs = np.zeros_like(u)
    for k in range(10):
        level = 0.16 + 0.068 * k + rng.normal(0, 0.004)
        arc = level + 1.6 * (u - 0.5) ** 2
        ribs += np.exp(-(((v - arc) / 0.009) ** 2))
    image += -0.32 * lungs + 0.07 * ribs * (0.3 + lungs)
    image += 0.24 * chest.ellipse(*chest.heart, edge=0.06)
    image += 0.22 * np.exp(-(((u - 0.5) / 0.03) ** 2)) * (v > 0.08)  # spine
    for lateral in (0.16, 0.84):  # clavicles: from the sternal notch up and out to the shoulders
        distance = segment_distance(
            u, v, np.array([0.5 + 0.06 * np.sign(lateral - 0.5), 0.19]), np.array([lateral, 0.13])
        )
        image += 0.18 * np.exp(-((distance / 0.011) ** 2))
    return image


# ---- one painter per finding: each adds a class-specific pattern at its typical place -------------------


def _atelectasis(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    for _ in range(int(chest.rng.integers(1, 3))):
        cu, cv = chest.lung_point(side, chest.rng.uniform(-0.3, 0.3), chest.rng.uniform(0.35, 0.6))
        tilt = chest.rng.uniform(-0.25, 0.25)
        image += 0.22 * chest.ellipse((cu, cv), (0.1, 0.012), edge=0.15, angle=tilt)


def _effusion(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    (cu, cv), (ru, rv) = chest.lungs[side]
    level = cv + rv * chest.rng.uniform(0.35, 0.6)
    lateral = (chest.u - cu) * (-1.0 if side == "right" else 1.0) / ru
    meniscus = level - 0.06 * np.clip(lateral, 0, None) ** 2  # fluid climbs the lateral chest wall
    fluid = special.expit((chest.v - meniscus) / 0.006)
    image += 0.34 * fluid * chest.lung(side, edge=0.02)


def _infiltration(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    blotches = smooth_noise(chest.rng, chest.size, sigma=min(chest.size) / 40)
    region = chest.ellipse(chest.lung_point(side, 0.0, 0.0), (0.12, 0.16), edge=0.2)
    image += 0.2 * np.clip(blotches - 0.3, 0, None) * region * chest.lung(side)


def _mass(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    center = chest.lung_point(side, chest.rng.uniform(-0.3, 0.4), chest.rng.uniform(-0.4, 0.3))
    radius = chest.rng.uniform(0.05, 0.07)
    image += 0.32 * chest.ellipse(center, (radius, radius * chest.rng.uniform(0.85, 1.0)), edge=0.06)


def _nodule(chest: _Chest, image: np.ndarray) -> None:
    for _ in range(int(chest.rng.integers(3, 7))):
        center = chest.lung_point(chest.side(), chest.rng.uniform(-0.6, 0.6), chest.rng.uniform(-0.6, 0.6))
        radius = chest.rng.uniform(0.012, 0.018)
        image += 0.3 * chest.ellipse(center, (radius, radius), edge=0.1)


def _pneumonia(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    center = chest.lung_point(side, chest.rng.uniform(-0.1, 0.2), 0.45)
    haze = chest.ellipse(center, (0.1, 0.09), edge=0.35)
    # Air bronchograms: thin dark branching lines inside the opacity.
    bronchi = np.exp(-((np.sin(40 * chest.u + 25 * chest.v) / 0.12) ** 2))
    image += 0.24 * haze * (1.0 - 0.5 * bronchi) * chest.lung(side)


def _pneumothorax(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    (cu, cv), (ru, rv) = chest.lungs[side]
    lung = chest.lung(side, edge=0.02)
    collapsed = chest.ellipse((cu, cv + 0.04), (ru * 0.7, rv * 0.8), edge=0.02)
    image -= 0.14 * lung * (1.0 - collapsed)  # air without lung markings
    pleural_line = collapsed * (1.0 - collapsed) * 4.0
    image += 0.2 * pleural_line * lung


def _consolidation(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    center = chest.lung_point(side, chest.rng.uniform(-0.2, 0.3), chest.rng.uniform(-0.55, -0.3))
    image += 0.36 * chest.ellipse(center, (0.09, 0.07), edge=0.03, angle=chest.rng.uniform(-0.4, 0.4))


def _edema(chest: _Chest, image: np.ndarray) -> None:
    for side in ("right", "left"):
        hilum = chest.lung_point(side, -0.55, 0.05)
        image += 0.22 * chest.ellipse(hilum, (0.08, 0.12), edge=0.4) * chest.lung(side)
        for k in range(4):  # Kerley B lines: short horizontal lines at the lateral bases
            cu, cv = chest.lung_point(side, 0.8, 0.35 + 0.08 * k)
            image += 0.18 * chest.ellipse((cu, cv), (0.03, 0.004), edge=0.2)


def _emphysema(chest: _Chest, image: np.ndarray) -> None:
    for side in ("right", "left"):
        image -= 0.08 * chest.lung(side)
        for _ in range(2):  # apical bullae
            center = chest.lung_point(side, chest.rng.uniform(-0.3, 0.4), chest.rng.uniform(-0.75, -0.45))
            radius = chest.rng.uniform(0.025, 0.04)
            image -= 0.1 * chest.ellipse(center, (radius, radius), edge=0.05)


def _fibrosis(chest: _Chest, image: np.ndarray) -> None:
    period = 0.035
    net = np.maximum(
        np.exp(-((np.sin(np.pi * chest.u / period) / 0.15) ** 2)),
        np.exp(-((np.sin(np.pi * (chest.v + 0.3 * chest.u) / period) / 0.15) ** 2)),
    )
    for side in ("right", "left"):
        base = chest.ellipse(chest.lung_point(side, 0.4, 0.5), (0.1, 0.12), edge=0.3)
        image += 0.22 * net * base * chest.lung(side)


def _pleural_thickening(chest: _Chest, image: np.ndarray) -> None:
    side = chest.side()
    (cu, cv), (ru, rv) = chest.lungs[side]
    outer = chest.ellipse((cu, cv), (ru, rv), edge=0.02)
    inner = chest.ellipse((cu, cv), (ru * 0.9, rv * 0.94), edge=0.02)
    lateral_or_apical = ((chest.u - cu) * (-1.0 if side == "right" else 1.0) > -0.02) | (
        chest.v < cv - rv * 0.6
    )
    image += 0.26 * (outer - inner) * lateral_or_apical


def _hernia(chest: _Chest, image: np.ndarray) -> None:
    (hu, hv), (_, hh) = chest.heart
    center = (hu + chest.rng.uniform(-0.02, 0.02), hv + hh * 0.55)
    radius = 0.055
    sac = chest.ellipse(center, (radius, radius * 0.85), edge=0.05)
    gas = chest.ellipse(center, (radius * 0.75, radius * 0.6), edge=0.05) * (chest.v < center[1])
    image += 0.18 * sac - 0.3 * gas  # a round retrocardiac sac with a gas bubble above an air-fluid level


def _generic(index: int) -> Callable[[_Chest, np.ndarray], None]:
    """A pattern for a class without a dedicated painter: shape, place and sign chosen by the class index."""

    def paint(chest: _Chest, image: np.ndarray) -> None:
        side = ("right", "left")[index % 2]
        dv = -0.5 + 0.33 * ((index // 2) % 4)
        center = chest.lung_point(side, 0.2 * ((index // 8) % 3) - 0.2, dv)
        kind = (index // 2) % 3
        if kind == 0:
            image += 0.3 * chest.ellipse(center, (0.05, 0.05), edge=0.05)
        elif kind == 1:
            image += 0.3 * chest.ellipse(center, (0.09, 0.015), edge=0.1)
        else:
            ring = chest.ellipse(center, (0.05, 0.05), edge=0.03) - chest.ellipse(
                center, (0.03, 0.03), edge=0.03
            )
            image += 0.35 * ring

    return paint


_PAINTERS: dict[str, Callable[[_Chest, np.ndarray], None]] = {
    "Atelectasis": _atelectasis,
    "Cardiomegaly": lambda chest, image: None,  # drawn by the anatomy as an enlarged heart
    "Effusion": _effusion,
    "Infiltration": _infiltration,
    "Mass": _mass,
    "Nodule": _nodule,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Emphysema": _emphysema,
    "Fibrosis": _fibrosis,
    "Pleural_Thickening": _pleural_thickening,
    "Hernia": _hernia,
}


def render_cxr(
    rng: np.random.Generator,
    findings: Sequence[str],
    size: tuple[int, int] = (256, 256),
    *,
    view: str = "PA",
    classes: Sequence[str] = NIH_FINDINGS,
    noise_std: float = 0.015,
    finding_contrast: float = 1.0,
) -> np.ndarray:
    """Draw one chest-X-ray-like image showing ``findings``.

    Args:
        rng: the random generator (consumed).
        findings: positive class names (a subset of ``classes``); empty for a normal chest.
        size: (H, W) in pixels.
        view: "PA" or "AP" (AP magnifies the heart slightly, as a real AP film does).
        classes: all class names; a name without a dedicated pattern gets a generic one fixed by its index.
        noise_std: white noise std on the [0, 1] intensity scale.
        finding_contrast: scale of every finding's change to the image (1 = the default patterns; e.g. 0.2
            = subtle findings, a fifth of the intensity change, and for the two findings the anatomy draws, a
            fifth of the enlarged heart's extra width and of the hyperinflation). Exactly 1 draws the default
            image bit for bit; the random draws do not depend on it.

    Returns:
        (H, W) uint8.
    """
    if view not in ("PA", "AP"):
        raise ValueError(f"view must be 'PA' or 'AP' (frontal films only), got {view!r}")
    if not finding_contrast >= 0:
        raise ValueError(f"finding_contrast must be >= 0, got {finding_contrast!r}")
    # Detector noise comes from its own stream so that adding a finding changes only the finding's pixels.
    noise_rng = np.random.default_rng(rng.integers(2**63))
    chest = _Chest(rng, size, set(findings), view, finding_contrast)
    image = _render_anatomy(chest)
    for name in findings:
        paint = _PAINTERS.get(name, _generic(list(classes).index(name)))
        if finding_contrast == 1.0:
            paint(chest, image)
        else:
            before = image.copy()
            paint(chest, image)
            image = before + finding_contrast * (image - before)
    image = ndimage.gaussian_filter(image, sigma=max(min(size) / 256, 0.5))
    image += 0.02 * smooth_noise(noise_rng, size, sigma=min(size) / 8)
    image += noise_std * noise_rng.standard_normal(size)
    return to_uint8(image)


# ---- reports -------------------------------------------------------------------------------------------

# Per class: several phrasings of a positive finding, and the name used in negations and the impression;
# the tables live in cxr_phrases.yaml beside this file.
_PHRASE_FILE = Path(__file__).with_name("cxr_phrases.yaml")


@functools.lru_cache(maxsize=1)
def _phrase_tables() -> dict[str, Any]:
    return yaml.safe_load(_PHRASE_FILE.read_text(encoding="utf-8"))


def _class_phrases(name: str) -> tuple[tuple[str, ...], str]:
    known = _phrase_tables()["findings"]
    if name in known:
        return tuple(known[name]["positive"]), known[name]["term"]
    term = name.replace("_", " ").lower()
    return (f"Findings of {term} in the {{side}} lung.", f"There is {term}."), term


REPORT_STYLES = ("default", "entity_only")
"""``write_cxr_report`` styles: ``default`` (varied phrasings, negations, impression) and ``entity_only``."""


def _class_word(name: str) -> str:
    known = _phrase_tables()["findings"]
    return known[name]["word"] if name in known else name.replace("_", " ").lower()


def write_cxr_report(
    rng: np.random.Generator, findings: Sequence[str], classes: Sequence[str], style: str = "default"
) -> str:
    """A short radiology report naming exactly ``findings``.

    ``default``: one class-specific phrasing per finding (some name a side or a sign that only that finding
    has), a few negated absent classes, and an impression listing the findings again. Every positive
    sentence names its finding; every sentence about an absent class starts with "No" or "There is no". An
    empty ``findings`` gives a normal report ending in "No acute cardiopulmonary process."

    ``entity_only``: one shared frame, "There is <word>.", per finding in random order, where <word> is the
    finding's one-word name (the ``word`` of cxr_phrases.yaml: "effusion", "nodule", ...); no negations, no
    impression; "FINDINGS: There is no finding." when normal. The finding words are then the only thing that
    differs between two reports with the same number of findings, so a masked finding word can be recovered
    from the image and not from the rest of the text.
    """
    if style not in REPORT_STYLES:
        raise ValueError(f"style must be one of {REPORT_STYLES}, got {style!r}")
    if style == "entity_only":
        words = [_class_word(name) for name in findings]
        if not words:
            return "FINDINGS: There is no finding."
        return "FINDINGS: " + " ".join(f"There is {words[int(i)]}." for i in rng.permutation(len(words)))
    sentences = []
    for name in findings:
        phrasings, _ = _class_phrases(name)
        side = str(rng.choice(["right", "left"]))
        sentence = str(rng.choice(phrasings)).format(side=side, Side=side.capitalize())
        sentences.append(sentence)
    absent = [name for name in classes if name not in findings]
    if not findings:
        sentences.extend(_phrase_tables()["normal_sentences"][: int(rng.integers(1, 4))])
    num_negations = min(len(absent), int(rng.integers(1, 4)))
    for index in rng.choice(len(absent), size=num_negations, replace=False) if num_negations else []:
        sentences.append(
            str(rng.choice(_phrase_tables()["negations"])).format(name=_class_phrases(absent[int(index)])[1])
        )
    if findings:
        names = [_class_phrases(name)[1] for name in findings]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        impression = listed[0].upper() + listed[1:] + "."
    else:
        impression = "No acute cardiopulmonary process."
    return "FINDINGS: " + " ".join(sentences) + " IMPRESSION: " + impression


# ---- the dataset ---------------------------------------------------------------------------------------


def _class_prevalences(classes: Sequence[str], head_prevalence: float, zipf_exponent: float) -> np.ndarray:
    """Zipf-like prevalence per class: ``head_prevalence / (rank + 1) ** zipf_exponent``.

    Ranks follow the real ChestX-ray14 frequency order for its class names, then the given order.
    """
    known = sorted(
        (NIH_FREQUENCY_RANK[name], i) for i, name in enumerate(classes) if name in NIH_FREQUENCY_RANK
    )
    order = [i for _, i in known] + [i for i, name in enumerate(classes) if name not in NIH_FREQUENCY_RANK]
    ranks = np.empty(len(classes))
    ranks[order] = np.arange(len(classes))
    return head_prevalence / (ranks + 1.0) ** zipf_exponent


def _draw_labels(
    rng: np.random.Generator, n_images: int, prevalences: np.ndarray, min_positives: int
) -> np.ndarray:
    labels = rng.random((n_images, len(prevalences))) < prevalences
    for c in range(len(prevalences)):  # keep every class present so per-class metrics are defined
        missing = min(min_positives, n_images) - int(labels[:, c].sum())
        if missing > 0:
            candidates = np.flatnonzero(~labels[:, c])
            labels[rng.choice(candidates, size=missing, replace=False), c] = True
    return labels.astype(np.int64)


def _assign_patients(rng: np.random.Generator, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient id (1-based) and follow-up number per image; about 1.5 images per patient."""
    patients, follow_ups = [], []
    patient = 0
    while len(patients) < n_images:
        patient += 1
        visits = 1 + int(rng.poisson(0.5))
        for visit in range(min(visits, n_images - len(patients))):
            patients.append(patient)
            follow_ups.append(visit)
    return np.asarray(patients), np.asarray(follow_ups)


def _patient_splits(
    rng: np.random.Generator, num_patients: int, test_fraction: float, validate_fraction: float
) -> dict[int, str]:
    """Split patients (not images) into train / validate / test, each non-empty when there are >= 3."""
    order = rng.permutation(np.arange(1, num_patients + 1))
    n_test = max(1, round(test_fraction * num_patients)) if num_patients >= 2 else 0
    n_validate = max(1, round(validate_fraction * num_patients)) if num_patients >= 3 else 0
    split = {int(p): "train" for p in order}
    split.update({int(p): "test" for p in order[:n_test]})
    split.update({int(p): "validate" for p in order[n_test : n_test + n_validate]})
    return split


def make_cxr_dataset(
    root: str | PathLike,
    *,
    n_images: int = 64,
    size: tuple[int, int] = (256, 256),
    classes: Sequence[str] = NIH_FINDINGS,
    seed: int = 0,
    head_prevalence: float = 0.3,
    zipf_exponent: float = 1.0,
    min_positives_per_class: int = 1,
    test_fraction: float = 0.2,
    validate_fraction: float = 0.1,
    ap_fraction: float = 0.4,
    finding_contrast: float = 1.0,
    report_style: str = "default",
) -> Path:
    """Write a long-tailed multi-label chest X-ray dataset in both MIMIC-like and ChestX-ray14 layouts.

    Layout::

        root/images/00000001_000.png ...  uint8 grey (H, W) = size, named PatientID_FollowUp as in NIH
        root/reports.csv                  image (relative path "images/<name>"), split (train|validate|test),
                                          view (PA|AP), report, labels ("A|B" or "No Finding"), one 0/1
                                          column per class
        root/Data_Entry_2017.csv          Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age,
                                          Patient Gender, View Position, OriginalImage[Width, Height],
                                          OriginalImagePixelSpacing[x, y]  (the NIH header, split columns
                                          included)
        root/train_val_list.txt           NIH official-split files: image names, one per line; the split is
        root/test_list.txt                by patient ("validate" patients are part of train_val)

    Each class is positive independently with the Zipf-like prevalence
    ``head_prevalence / (rank + 1) ** zipf_exponent`` (rank 0 = most frequent; NIH names keep their real
    frequency order), so a few head classes dominate and the tail is rare; every class gets at least
    ``min_positives_per_class`` positives so per-class metrics are defined.

    Args:
        root: output folder (created).
        n_images: number of images.
        size: (H, W) in pixels.
        classes: class names; NIH names get dedicated patterns and report phrasings, other names generic ones.
        seed: the dataset seed.
        head_prevalence: prevalence of the most frequent class.
        zipf_exponent: how fast prevalence decays with rank.
        min_positives_per_class: positives forced per class (0 disables).
        test_fraction, validate_fraction: fractions of patients in the test / validate splits.
        ap_fraction: fraction of AP (vs PA) views.
        finding_contrast: scale of the findings' patterns (:func:`render_cxr`; 1 = the default images).
        report_style: :func:`write_cxr_report` style ("default", or "entity_only": one shared sentence frame
            per finding, no negations, no impression).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    classes = list(classes)
    if len(set(classes)) != len(classes) or NO_FINDING in classes or any("|" in name for name in classes):
        raise ValueError(f"classes must be unique, without '|' and without {NO_FINDING!r}; got {classes}")
    if report_style not in REPORT_STYLES:
        raise ValueError(f"report_style must be one of {REPORT_STYLES}, got {report_style!r}")
    label_seed, meta_seed, image_seed = np.random.SeedSequence(seed).spawn(3)
    label_rng, meta_rng = np.random.default_rng(label_seed), np.random.default_rng(meta_seed)
    image_seeds = image_seed.spawn(n_images)  # image i depends on (seed, i) only

    labels = _draw_labels(
        label_rng,
        n_images,
        _class_prevalences(classes, head_prevalence, zipf_exponent),
        min_positives_per_class,
    )
    patients, follow_ups = _assign_patients(meta_rng, n_images)
    split_of_patient = _patient_splits(meta_rng, int(patients.max()), test_fraction, validate_fraction)
    ages = {int(p): int(meta_rng.integers(18, 90)) for p in np.unique(patients)}
    sexes = {int(p): str(meta_rng.choice(["M", "F"])) for p in np.unique(patients)}
    views = np.where(meta_rng.random(n_images) < ap_fraction, "AP", "PA")
    pixel_spacing = 350.0 / size[1]  # a ~35 cm field of view

    report_rows, nih_rows = [], []
    for i in range(n_images):
        findings = [name for name, positive in zip(classes, labels[i], strict=True) if positive]
        name = f"{patients[i]:08d}_{follow_ups[i]:03d}.png"
        image_rng = np.random.default_rng(image_seeds[i])
        image = render_cxr(
            image_rng, findings, size, view=str(views[i]), classes=classes, finding_contrast=finding_contrast
        )
        write_png(root / "images" / name, image)
        label_text = "|".join(findings) if findings else NO_FINDING
        report_rows.append(
            {
                "image": f"images/{name}",
                "split": split_of_patient[int(patients[i])],
                "view": str(views[i]),
                "report": write_cxr_report(image_rng, findings, classes, report_style),
                "labels": label_text,
                **{cls: int(v) for cls, v in zip(classes, labels[i], strict=True)},
            }
        )
        nih_rows.append(
            {
                "Image Index": name,
                "Finding Labels": label_text,
                "Follow-up #": int(follow_ups[i]),
                "Patient ID": int(patients[i]),
                "Patient Age": ages[int(patients[i])],
                "Patient Gender": sexes[int(patients[i])],
                "View Position": str(views[i]),
                # The real header is "OriginalImage[Width,Height]" unquoted, so pandas reads two columns.
                "OriginalImage[Width": size[1],
                "Height]": size[0],
                "OriginalImagePixelSpacing[x": pixel_spacing,
                "y]": pixel_spacing,
            }
        )
    reports = pd.DataFrame(report_rows)
    write_csv(root / "reports.csv", reports)
    write_csv(root / "Data_Entry_2017.csv", pd.DataFrame(nih_rows))
    is_test = reports["split"].to_numpy() == "test"
    names = [row["Image Index"] for row in nih_rows]
    write_text(
        root / "train_val_list.txt", "".join(f"{n}\n" for n, t in zip(names, is_test, strict=True) if not t)
    )
    write_text(root / "test_list.txt", "".join(f"{n}\n" for n, t in zip(names, is_test, strict=True) if t))
    return root
