import warnings
from pathlib import Path

import pytest
import torch

# spconv 2.3 emits FutureWarnings about torch.cuda.amp at import; they are not ours.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\..*")

DATA_ROOT = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def ct_data_dir() -> Path:
    folder = DATA_ROOT / "ct-totalsegmentator"
    if not (folder / "example_ct_sm.nii.gz").exists():
        pytest.skip(f"real CT test data absent ({folder}); it lives in the project's ../shared/data")
    return folder
