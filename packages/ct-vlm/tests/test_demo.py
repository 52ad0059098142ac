"""The demo's target: on held-out synthetic volumes the demo model answers closed questions about what the
image shows (a lesion's presence, side, size) with accuracy >= 0.8, and its generated reports reach
BLEU-4 >= 0.5 against the templates."""

from __future__ import annotations

import os

import pytest

from ct_vlm.cli import main


@pytest.mark.slow
def test_demo_model_sees_the_lesions(tmp_path):
    old = os.environ.get("MEDZOO_CACHE")
    os.environ["MEDZOO_CACHE"] = str(tmp_path / "cache")
    try:
        root = tmp_path / "run"
        main(["fit", "--config", "demo", f"--trainer.default_root_dir={root}", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false"])  # fmt: skip
        result = main(["evaluate", "--root_dir", str(root)])
    finally:
        if old is None:
            os.environ.pop("MEDZOO_CACHE")
        else:
            os.environ["MEDZOO_CACHE"] = old
    assert result["n_samples"] == 16 * 6
    assert result["closed_vqa/accuracy"] >= 0.8, result
    assert result["report/bleu4"] >= 0.5, result
    # The diagnosis scores follow the image too (chance is 0.5).
    assert result["diagnosis/auc"] >= 0.75, result
