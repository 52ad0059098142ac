from __future__ import annotations

import pytest
import torch

from hfc_attack import create_model


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tiny", drop_rate=0.0).eval()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 32, 32, generator=g)
