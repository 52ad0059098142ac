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


REFERENCE_KEYS = Path(__file__).parent / "fixtures" / "reference_encoder_keys.txt"


@pytest.fixture
def reference_keys() -> list[tuple[str, tuple[int, ...]]]:
    """The reference encoder's 122 state_dict keys and shapes (tests/fixtures, listed from its code)."""
    rows = []
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            rows.append((key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())))
    return rows


@pytest.fixture
def reference_state(reference_keys):
    """``reference_state(prefix)``: a reference-layout encoder state whose i-th tensor (fixture order) is
    filled with the value i."""

    def build(prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + k: torch.full(shape, float(i)) for i, (k, shape) in enumerate(reference_keys)}

    return build
