"""The offline demo end to end: `carzero fit --config demo`, then zero-shot on the synthetic test split.

Slow (about 3-5 CPU minutes): ``OMP_NUM_THREADS=1 pytest -m slow packages/carzero/tests/test_demo.py``.
"""

from __future__ import annotations

import json
import math

import pytest

from carzero.cli import main

# Chance is 0.5. A demo that shows the method working should reach well above it on the synthetic test split;
# 0.65 leaves room for run-to-run variation from thread scheduling on ~100 test images.
MIN_MACRO_AUC = 0.65


@pytest.mark.slow
@pytest.mark.xfail(
    raises=AssertionError,
    # Not strict: with 0.2.0 the run measures 0.687 on 29 test images, which passes the bar, but the same
    # model's val/auc moved between 0.40 and 0.61 from epoch to epoch in 0.1.0 with val/match_acc at chance,
    # so one seed on 29 images cannot tell learning from noise (README, Results). Issue 12 replaces this test.
    strict=False,
    reason="known limitation (README, 'Demo'): the from-scratch ViT + cross-attention fusion collapses to "
    "chance (image features made constant) on the demo's few hundred steps; zero-shot AUROC ~0.5",
)
def test_demo_learns_zero_shot_classification(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    run, data = tmp_path / "run", tmp_path / "cache" / "carzero" / "cxr-n160-128x128-seed0"
    main(["fit", "--config", "demo", f"--trainer.default_root_dir={run}",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    result = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", "last",
                   "--root_dir", str(run), "--output_dir", str(tmp_path)])  # fmt: skip
    # The pipeline itself must work: these failures are real errors, not the known limitation.
    saved = json.loads((tmp_path / "evaluate_chestxray14.json").read_text())
    n_test = len((data / "test_list.txt").read_text().split())
    if saved["n_images"] != n_test or not math.isfinite(result["auc"]):
        pytest.fail(
            f"evaluate scored {saved['n_images']} of {n_test} test images, macro AUROC {result['auc']}"
        )
    assert result["auc"] >= MIN_MACRO_AUC, f"demo zero-shot macro AUROC {result['auc']:.3f} < {MIN_MACRO_AUC}"
