"""medzoo.synthetic.make_cxr_dataset's opt-in options: subtle findings (``finding_contrast``) and reports
whose finding words are the only difference (``report_style="entity_only"``). The defaults must not move:
other packages' demos and their cached sets depend on them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medzoo.synthetic import NIH_FINDINGS, make_cxr_dataset, render_cxr, write_cxr_report

# The anatomy draws these two (a wider heart, taller lungs); the others are painted on top of the anatomy.
ANATOMY_DRAWN = {"Cardiomegaly", "Emphysema"}
# render_cxr(default_rng(7), [Effusion, Nodule, Cardiomegaly], (48, 48)) and the report drawn after it, as the
# generator of medzoo-core 0.3.0 (before the options) wrote them; checked equal to that code's output.
PINNED_IMAGE_SHA256 = "90c676705ed17b0a7ca427d8c3bcabf1fe19750c0b7442b9f92339c7e8737b73"
PINNED_REPORT = (
    "FINDINGS: Small left pleural effusion. Several small pulmonary nodules. Cardiomegaly with a widened "
    "cardiac silhouette. No evidence of consolidation. IMPRESSION: Pleural effusion, pulmonary nodule and "
    "cardiomegaly."
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_image_and_report_are_the_pinned_ones():
    rng = np.random.default_rng(7)
    image = render_cxr(rng, ["Effusion", "Nodule", "Cardiomegaly"], (48, 48))
    report = write_cxr_report(rng, ["Effusion", "Nodule", "Cardiomegaly"], NIH_FINDINGS)
    assert hashlib.sha256(image.tobytes()).hexdigest() == PINNED_IMAGE_SHA256
    assert report == PINNED_REPORT


def test_explicit_defaults_write_the_same_files(tmp_path):
    plain = _files(make_cxr_dataset(tmp_path / "a", n_images=8, size=(40, 40), seed=2))
    explicit = _files(
        make_cxr_dataset(
            tmp_path / "b", n_images=8, size=(40, 40), seed=2, finding_contrast=1.0, report_style="default"
        )
    )
    assert plain == explicit


@pytest.mark.parametrize("name", NIH_FINDINGS)
def test_contrast_zero_hides_every_finding_and_contrast_scales_it(name):
    size = (96, 96)
    normal = render_cxr(np.random.default_rng(5), [], size).astype(np.float64)
    hidden = render_cxr(np.random.default_rng(5), [name], size, finding_contrast=0.0).astype(np.float64)
    assert np.array_equal(hidden, normal)  # the random draws do not depend on the contrast
    full = np.abs(render_cxr(np.random.default_rng(5), [name], size).astype(np.float64) - normal).sum()
    subtle = render_cxr(np.random.default_rng(5), [name], size, finding_contrast=0.3).astype(np.float64)
    ratio = np.abs(subtle - normal).sum() / full
    if name in ANATOMY_DRAWN:  # a smaller enlargement: a smaller, not proportional, change
        assert 0.05 < ratio < 0.6, ratio
    else:  # the painted change scales linearly (up to rounding to uint8)
        assert ratio == pytest.approx(0.3, abs=0.06)


def test_contrast_must_not_be_negative():
    with pytest.raises(ValueError, match="finding_contrast"):
        render_cxr(np.random.default_rng(0), ["Mass"], (32, 32), finding_contrast=-0.1)


def test_entity_only_reports_differ_only_in_their_finding_words(tmp_path):
    root = make_cxr_dataset(tmp_path, n_images=120, size=(32, 32), seed=1, report_style="entity_only")
    reports = pd.read_csv(root / "reports.csv")
    frames = {}
    for _, row in reports.iterrows():
        text = row["report"]
        assert "IMPRESSION" not in text and " no " not in text.replace("There is no finding.", "")
        words = re.findall(r"There is (\w+)\.", text)
        positives = [name for name in NIH_FINDINGS if row[name] == 1]
        if not positives:
            assert text == "FINDINGS: There is no finding."
            continue
        expected = {"Effusion": "effusion", "Infiltration": "infiltrate", "Pleural_Thickening": "thickening"}
        assert sorted(words) == sorted(expected.get(n, n.lower()) for n in positives), text
        frames.setdefault(len(words), set()).add(re.sub(r"There is \w+\.", "There is X.", text))
    assert all(len(frame) == 1 for frame in frames.values())  # one frame per finding count
    assert max(frames) >= 2


def test_entity_only_orders_the_findings_at_random():
    findings = ["Atelectasis", "Effusion", "Mass", "Nodule"]
    orders = {
        write_cxr_report(np.random.default_rng(seed), findings, NIH_FINDINGS, "entity_only")
        for seed in range(20)
    }
    assert len(orders) > 5  # the sentence order does not tell which class comes first


def test_options_change_images_and_reports_but_not_labels_or_splits(tmp_path):
    base = pd.read_csv(make_cxr_dataset(tmp_path / "a", n_images=30, size=(40, 40), seed=4) / "reports.csv")
    root = make_cxr_dataset(
        tmp_path / "b", n_images=30, size=(40, 40), seed=4, finding_contrast=0.2, report_style="entity_only"
    )
    other = pd.read_csv(root / "reports.csv")
    keep = ["image", "split", "view", "labels", *NIH_FINDINGS]
    pd.testing.assert_frame_equal(base[keep], other[keep])
    assert (base["report"] != other["report"]).all()
    diseased = base["labels"] != "No Finding"
    differ = [
        (tmp_path / "a" / p).read_bytes() != (root / p).read_bytes() for p in base.loc[diseased, "image"]
    ]
    assert all(differ)


def test_unknown_report_style_is_refused(tmp_path):
    with pytest.raises(ValueError, match="report_style"):
        make_cxr_dataset(tmp_path, n_images=4, size=(32, 32), report_style="terse")
