"""The demo's target, end to end on a CPU with the shipped demo configs: stage 1 -> one-shot pseudo-labels
-> stage 2 -> test.

Asserted (issue 13): on two generated phantom domains with one template each,
- the pseudo-labels' MRE is below half the mean-shape MRE (per domain), and
- stage 2's test MRE is below the pseudo-labels' MRE (mean over the domains).

Both hold with the shipped configs and their seed (0); they are seed-dependent (README, Results: other
seeds miss one or the other), so this test pins the configured run, not every seed.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from uod_oneshot.cli import main


@pytest.mark.slow
def test_demo_pipeline_reaches_the_target(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_CACHE", str(tmp_path / "cache"))
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    ssl_root, datr_root = tmp_path / "ssl", tmp_path / "datr"
    start, cpu = time.perf_counter(), time.process_time()
    main(["ssl", "fit", "--config", "ssl_demo", "--trainer.default_root_dir", str(ssl_root), *quiet])
    main(["pseudo-label", "--ckpt_path", "best", "--root_dir", str(ssl_root), "--accelerator", "cpu"])
    summary = json.loads((ssl_root / "pseudo_labels" / "summary.json").read_text())
    labels = str(ssl_root / "pseudo_labels")
    main(["fit", "--config", "demo", "--trainer.default_root_dir", str(datr_root),
          "--data.pseudo_labels", labels, *quiet])  # fmt: skip
    main(
        [
            "test",
            "--config",
            "demo",
            "--trainer.default_root_dir",
            str(datr_root),
            "--ckpt_path",
            "best",
            *quiet,
        ]
    )
    elapsed = time.perf_counter() - start
    metrics = pd.concat(pd.read_csv(p) for p in (datr_root / "csv").glob("version_*/metrics.csv"))
    test = {name: float(metrics[f"test/{name}/mre"].dropna().iloc[-1]) for name in ("a", "b")}
    pseudo = {name: summary[name]["pseudo"]["mre"] for name in ("a", "b")}
    mean_shape = {name: summary[name]["mean_shape"]["mre"] for name in ("a", "b")}
    stage1_test = {name: summary[name]["test"]["mre"] for name in ("a", "b")}
    print(f"pseudo {pseudo}, mean-shape {mean_shape}, stage-1 on test {stage1_test}, stage-2 test {test}, "
          f"{elapsed:.0f} s, {time.process_time() - cpu:.0f} CPU-s")  # fmt: skip
    for name in ("a", "b"):
        assert pseudo[name] < 0.5 * mean_shape[name], (name, pseudo, mean_shape)
    assert sum(test.values()) / 2 < sum(pseudo.values()) / 2, (test, pseudo)
