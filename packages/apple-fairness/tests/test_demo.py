"""The demo's target, end to end on the CPU (slow): ``train-segmentor fit -> fit -> test``.

Asserted on the generated set (320 nodules, 64x64, group B brighter with coarser speckle):

- the baseline segmentor is unfair: its Dice gap between the groups is >= 0.10;
- the attribute is readable from its latent ``z``: balanced accuracy >= 0.90 of the discriminator
  trained on ``z`` alongside APPLE;
- after APPLE, the balanced accuracy of APPLE's discriminator on ``z'`` is at most half as far from chance
  as on ``z`` (for 2 groups: within [0.25, 0.75]);
- Dice stays within the stated margin: APPLE's overall Dice >= baseline - 0.03;
- the segmentor's weights are bit-identical after APPLE training.

Not asserted, reported: a fresh discriminator trained after APPLE on the frozen ``z'`` still reads the
attribute (see the README's Results).
"""

from __future__ import annotations

import json

import pytest
import torch

from apple_fairness.cli import main
from apple_fairness.module import load_segmentor_state

DICE_MARGIN = 0.03


@pytest.mark.slow
def test_demo_target(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    seg_runs, runs = tmp_path / "segmentor", tmp_path / "apple"
    main(
        [
            "train-segmentor",
            "fit",
            "--config",
            "train_segmentor_demo",
            "--trainer.default_root_dir",
            str(seg_runs),
            *quiet,
        ]
    )
    seg_ckpt = seg_runs / "checkpoints" / "best.ckpt"
    apple = [
        "--config",
        "demo",
        "--trainer.default_root_dir",
        str(runs),
        "--model.segmentor_ckpt",
        str(seg_ckpt),
    ]
    main(["fit", *apple, *quiet])
    main(["test", *apple, "--ckpt_path", "best", *quiet])

    report = json.loads((runs / "fairness" / "fairness_report.json").read_text())
    baseline, after = report["baseline"]["dice"], report["apple"]["dice"]
    leakage = report["attribute_leakage"]
    print(json.dumps({"baseline": baseline, "apple": after, "leakage": leakage}, indent=1))
    assert baseline["per_group"]["A"] - baseline["per_group"]["B"] >= 0.10
    assert leakage["before_z"]["balanced_accuracy"] >= 0.90
    assert (
        leakage["after_z_perturbed"]["distance_from_chance"]
        <= 0.5 * leakage["before_z"]["distance_from_chance"]
    )
    assert after["overall"] >= baseline["overall"] - DICE_MARGIN
    before_state = load_segmentor_state(seg_ckpt)
    for saved in ("best.ckpt", "last.ckpt"):  # the scored state and the newest
        after_state = load_segmentor_state(runs / "checkpoints" / saved)
        assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
