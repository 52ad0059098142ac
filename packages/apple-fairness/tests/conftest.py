from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small generated demo set (generic layout), shared by the tests that only read it."""
    from apple_fairness.synthetic import make_fairness_demo

    root = tmp_path_factory.mktemp("demo")
    make_fairness_demo(root, num_images=24, size=32, seed=0)
    return root


@pytest.fixture
def shenzhen(shared_data: Path) -> Path:
    """The real Shenzhen chest X-rays with lung masks and sex (the core fixture skips where absent)."""
    return shared_data / "chest-shenzhen"
