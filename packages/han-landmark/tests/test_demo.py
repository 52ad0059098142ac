"""The demo's target, as a new user runs it: `han-landmark fit --config demo` then `test --ckpt_path best`.

Slow (a few CPU minutes): ``OMP_NUM_THREADS=1 pytest -m slow packages/han-landmark/tests/test_demo.py``.
The bar: the test-split MRE of the trained tiny HAN is below half the MRE of the mean training shape (the
best any landmark-agnostic predictor can do), on the same generated phantoms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from han_landmark.cli import main
from han_landmark.data import LandmarkDataModule
from medzoo.metrics import mean_radial_error, radial_errors


@pytest.mark.slow
def test_demo_learns_landmarks_far_better_than_the_mean_shape(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    main(["fit", "--config", "demo", "--trainer.enable_progress_bar=false"])
    main(["test", "--config", "demo", "--ckpt_path", "best", "--trainer.enable_progress_bar=false"])
    runs = tmp_path / "runs" / "han-landmark-demo"
    metrics = pd.concat(pd.read_csv(p) for p in sorted((runs / "csv").glob("version_*/metrics.csv")))
    test_mre = float(metrics["test/mre_px"].dropna().iloc[-1])

    # The same split the demo used: the mean training shape, scaled to each test image, as the baseline.
    data = LandmarkDataModule(
        root=None, synthesize_if_missing=True, synthetic_images=40, synthetic_size=(256, 256),
        num_landmarks=6, input_size=(128, 128), val_fraction=0.1, test_fraction=0.1,
    )  # fmt: skip
    data.setup("test")
    mean_shape = np.mean([s.coords for s in data.splits["train"]], axis=0)
    truth = np.stack([s.coords for s in data.splits["test"]])
    baseline, _ = mean_radial_error(radial_errors(np.broadcast_to(mean_shape, truth.shape), truth))
    assert test_mre < 0.5 * baseline, f"demo test MRE {test_mre:.2f} px vs mean shape {baseline:.2f} px"
