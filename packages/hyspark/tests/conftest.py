import warnings
from pathlib import Path

import pytest
import torch

# spconv 2.3 emits FutureWarnings about torch.cuda.amp at import; they are not ours.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\..*")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def ct_data_dir(shared_data: Path) -> Path:
    """The real CT files of ../shared/data (the core's `shared_data` fixture skips where absent)."""
    return shared_data / "ct-totalsegmentator"
