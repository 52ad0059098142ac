from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ct_vlm.language import write_tiny_language_model

CORPUS = [
    "Question: Write the radiology report. Answer:",
    "A small lesion is seen on the left side. No other findings.",
    "A large lesion is seen on the right side. No other findings.",
    "No focal lesion is seen. No other findings.",
    "Question: Is there evidence of lesion? Answer: yes no",
]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + BPE tokenizer (with <image>) saved to a folder: the real from_pretrained path."""
    return write_tiny_language_model(tmp_path_factory.mktemp("tiny_lm"), CORPUS, hidden=32, layers=2)


@pytest.fixture
def ct_data_dir(shared_data: Path) -> Path:
    return shared_data / "ct-totalsegmentator"
