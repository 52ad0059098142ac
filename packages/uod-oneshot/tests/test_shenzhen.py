"""One-shot on the real Shenzhen chest X-rays (../shared/data/chest-shenzhen): stage 1 is trained (without
labels) on the 11 images, one image is the template, and the pseudo-labels of the other ten are compared with
the ground truth and with the mean-shape baseline. The figure goes in the README; the assertion is only that
the pipeline runs on real files and reports finite errors (11 images cannot carry a quality claim)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uod_oneshot.cli import main

EPOCHS = 30


@pytest.mark.slow
def test_shenzhen_one_shot_pseudo_labels(shared_data, tmp_path):
    root = shared_data / "chest-shenzhen"
    domain = {
        "name": "chest",
        "layout": "normalized_txt",
        "root": str(root),
        "num_landmarks": 6,
        "template": "CHNCXR_0001_0",
        "label_dir": "landmarks_all279",
    }
    runs = tmp_path / "ssl"
    main(["ssl", "fit", "--config", "ssl_demo", "--data.domains", json.dumps([domain]),
          "--model.num_domains", "1",
          "--data.input_size", "128", "--data.crop_size", "96", "--data.test_fraction", "0.0",
          "--data.val_fraction", "0.1", "--data.batch_size", "5", "--trainer.max_epochs", str(EPOCHS),
          "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    summary = main(["pseudo-label", "--ckpt_path", "best", "--root_dir", str(runs), "--accelerator", "cpu"])
    report = summary["chest"]
    print(f"Shenzhen one-shot (template CHNCXR_0001_0, {report['images']} images): "
          f"pseudo-label MRE {report['pseudo']['mre']:.2f} px, "
          f"mean-shape MRE {report['mean_shape']['mre']:.2f} px")  # fmt: skip
    assert report["images"] == 10
    assert np.isfinite(report["pseudo"]["mre"]) and np.isfinite(report["mean_shape"]["mre"])
