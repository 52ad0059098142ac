from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def totalseg(shared_data: Path) -> Path:
    """Real CT/MR with organ labels from ../shared/data (the core's `shared_data` skips where absent)."""
    return shared_data / "ct-totalsegmentator"
