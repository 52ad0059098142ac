"""The demo target: a linear probe on the demo-pre-trained encoder beats the same probe on a randomly
initialised encoder by at least 0.1 macro AUROC on the generated CXR test split (one seed here; the
README reports three)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecamp.cli import main

QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
# 100 probe epochs (800 steps) so the probe is not cut short; the count is not what hides a gain (README).
PROBE = ["--model.linear_probe=true", "--trainer.max_epochs=100", "--model.optimizer.init_args.lr=0.01",
         "--model.optimizer.init_args.weight_decay=0.0"]  # fmt: skip


def probe_auc(run: Path, pretrained: Path | None) -> float:
    start = [f"--model.pretrained={pretrained}"] if pretrained else []
    args = ["--config", "finetune_demo", f"--trainer.default_root_dir={run}", *PROBE, *start, *QUIET]
    main(["finetune", "fit", *args])
    tested = main(["finetune", "test", *args, f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}"])
    return float(tested.trainer.callback_metrics["test/auc"])


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # only the bar itself may fail; any other error fails the test
    reason="measured below the bar (README, Results): the generated findings are linearly separable from "
    "the raw pixels (0.847 macro AUROC, as the random encoder's 0.848), and within the CPU-sized demo "
    "pre-training the report reconstruction does not read the image (entity accuracy equal with another "
    "image), so the encoder gets no semantic signal and its probe does not beat the random-encoder probe by "
    "0.1 macro AUROC",
)
def test_pretraining_beats_a_random_encoder_under_a_linear_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    fitted = main(["fit", "--config", "demo", f"--trainer.default_root_dir={tmp_path / 'pre'}", *QUIET])
    metrics = fitted.trainer.callback_metrics
    own, other = (float(metrics[f"val/mlm_entity_acc{s}"]) for s in ("", "_other_image"))
    print(f"masked-entity MLM accuracy: own image {own:.3f}, another image {other:.3f}")
    pretrained = probe_auc(tmp_path / "probe-pre", tmp_path / "pre" / "checkpoints" / "best.ckpt")
    random = probe_auc(tmp_path / "probe-random", None)
    print(f"linear probe macro AUROC: pre-trained {pretrained:.3f}, random {random:.3f}")
    assert pretrained - random >= 0.1
