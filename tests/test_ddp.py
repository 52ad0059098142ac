"""Every package's demo trains 2 steps under DDP (2 CPU processes, gloo), and the epoch metric that its
checkpoints monitor, computed under DDP, equals the single-process value on the same data and weights.

These launch real multi-process runs through each package's console script (slow tier: `pytest -m slow`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
pytestmark = [pytest.mark.slow, pytest.mark.ddp]


def _script(package: Path) -> str:
    name = package.name
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.skip(f"the {name} console script is not installed next to {sys.executable}")
    return str(script)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def _last_value(root: Path, version: int, column: str) -> float:
    table = pd.read_csv(root / "csv" / f"version_{version}" / "metrics.csv")
    assert column in table, f"{column} was not logged (columns: {list(table.columns)})"
    return float(table[column].dropna().iloc[-1])


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_demo_two_steps_under_ddp_and_metric_equals_single_process(package: Path, tmp_path: Path) -> None:
    script = _script(package)
    medzoo = tomllib.loads((package / "pyproject.toml").read_text())["tool"]["medzoo"]
    fit = [a.format(cache=tmp_path / "cache") for a in medzoo["demo"][0][1:]]
    env = {
        **os.environ,
        "MEDZOO_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    root = tmp_path / "run"
    common = [f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false"]
    printed = yaml.safe_load(_run([script, *fit, *common, "--print_config"], tmp_path, env))
    monitor = printed["checkpoint"]["monitor"]

    _run(
        [
            script, *fit, *common,
            f"--trainer.strategy={medzoo.get('ddp_strategy', 'ddp')}",
            "--trainer.devices=2", "--trainer.accelerator=cpu",
            "--trainer.max_epochs=1", "--trainer.max_steps=2", "--trainer.limit_train_batches=2",
        ],
        tmp_path,
        env,
    )  # fmt: skip
    last = root / "checkpoints" / "last.ckpt"
    assert last.is_file()
    under_ddp = _last_value(root, 0, monitor)

    validate = [a if a != "fit" else "validate" for a in fit]
    _run([script, *validate, *common, "--trainer.devices=1", f"--ckpt_path={last}"], tmp_path, env)
    single = _last_value(root, 1, monitor)
    assert under_ddp == pytest.approx(single, rel=1e-4, abs=1e-6), f"{monitor}: DDP {under_ddp} vs {single}"
