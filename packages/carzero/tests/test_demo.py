"""The offline demo end to end, as the README runs it: `carzero pretrain --config pretrain_demo` (MAE),
`carzero fit --config demo` from the pre-trained ViT, then `carzero evaluate` on the synthetic test split.

Slow (several CPU minutes): ``OMP_NUM_THREADS=1 pytest -m slow packages/carzero/tests/test_demo.py``.
"""

from __future__ import annotations

import json

import pytest

from carzero.cli import main

# The demo's target (issue 12): zero-shot macro AUROC >= 0.75 on the synthetic test split. Chance is 0.5.
MIN_MACRO_AUC = 0.75


class DemoTargetMissed(Exception):
    """The AUROC bar alone is missed; any other failure (a crash, the bf16 check) fails the test."""


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=DemoTargetMissed,
    reason="measured below the bar (README, Results): 0.706 macro AUROC on seed 0 with the 0.3.0 demo recipe "
    "(MAE pre-training, no augmentation); 45 epochs reached 0.713 and no longer fit the 10-minute budget",
)
def test_demo_pipeline_learns_zero_shot_classification(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' run folders (runs/carzero-*) are relative, as in the README
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    quiet = "--trainer.enable_progress_bar=false"
    main(["pretrain", "--config", "pretrain_demo", quiet])
    assert (tmp_path / "runs" / "carzero-pretrain-demo" / "vit_weights.safetensors").is_file()
    main(["fit", "--config", "demo", quiet])
    data = tmp_path / "cache" / "carzero" / "cxr-n640-128x128-seed0"
    result = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", "last",
                   "--output_dir", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "evaluate_chestxray14.json").read_text())
    n_test = len((data / "test_list.txt").read_text().split())
    assert saved["n_images"] == n_test and saved["n_scored_classes"] >= 10
    # Issue 20: bf16 autocast changes the demo's macro AUROC by less than 0.005.
    bf16 = main(["evaluate", "--dataset", "chestxray14", "--root", str(data), "--ckpt_path", "last",
                 "--output_dir", str(tmp_path / "bf16"), "--precision", "bf16"])  # fmt: skip
    assert abs(bf16["auc"] - result["auc"]) < 0.005
    print(f"demo zero-shot macro AUROC {result['auc']:.3f} (fp32), {bf16['auc']:.3f} (bf16)")
    if result["auc"] < MIN_MACRO_AUC:
        raise DemoTargetMissed(f"demo zero-shot macro AUROC {result['auc']:.3f} < {MIN_MACRO_AUC}")
