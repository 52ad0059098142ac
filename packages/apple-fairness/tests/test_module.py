"""One APPLE training step for every segmentor family: G_p moves, the segmentor does not."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from apple_fairness.data import SegmentationFairnessDataModule
from apple_fairness.module import APPLEModule, state_fingerprint


@pytest.mark.parametrize(
    ("variant", "overrides"),
    [
        ("tiny", {"perturb_skips": True}),
        ("tiny_attention_unet", {}),
        ("tiny_cmunext", {}),
        ("tiny_samed", {"segmentor_args": {"image_size": 32}}),
        ("tiny_medsam", {"segmentor_args": {"image_size": 32}}),
    ],
)
def test_apple_step_moves_the_perturber_only(variant, overrides, demo_root, tmp_path):
    module = APPLEModule(variant=variant, overrides=overrides)
    before = state_fingerprint(module.model.segmentor)
    perturber = [p.detach().clone() for p in module.model.perturbers.parameters()]
    discriminator = [p.detach().clone() for p in module.model.discriminator.parameters()]
    data = SegmentationFairnessDataModule(demo_root, attribute="group", image_size=(32, 32), batch_size=4)
    trainer = pl.Trainer(
        fast_dev_run=2,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    trainer.fit(module, data)
    assert state_fingerprint(module.model.segmentor) == before
    moved = [
        not torch.equal(a, b) for a, b in zip(perturber, module.model.perturbers.parameters(), strict=True)
    ]
    assert any(moved)
    disc_moved = [
        not torch.equal(a, b)
        for a, b in zip(discriminator, module.model.discriminator.parameters(), strict=True)
    ]
    assert all(disc_moved)
    assert trainer.global_step == 2  # one trainer step per batch (G_p), the D_p step is not counted
    assert len(module.model.perturbers) == (4 if overrides.get("perturb_skips") else 1)
