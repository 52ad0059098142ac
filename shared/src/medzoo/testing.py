"""medzoo's pytest plugin, loaded automatically where medzoo-core is installed (entry point ``pytest11``).

Fixtures for every package's tests:

- ``shared_data``: the read-only real-data folder ``<pytest rootdir>/../shared/data`` (or
  ``$MEDZOO_SHARED_DATA``); the test is skipped, with the reason, where it is absent (a user's clone).
- ``tiny_bert_dir`` / ``tiny_causal_lm_dir``: a randomly initialised Hugging Face BERT or causal LM with its
  tokenizer, saved to a temporary folder, so that the real ``from_pretrained`` path is exercised offline.

Every test process runs torch on one thread (``MEDZOO_TEST_THREADS`` overrides): the models in tests are
tiny, and CI's cores are shared, where more threads only oversubscribe.

The builders live in :mod:`medzoo.tiny_hf` (no pytest needed), for demos that build their own tiny model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["TINY_CORPUS", "TINY_VOCAB", "write_tiny_bert", "write_tiny_causal_lm"]

from medzoo.tiny_hf import TINY_CORPUS, TINY_VOCAB, write_tiny_bert, write_tiny_causal_lm


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("MEDZOO_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_data(pytestconfig: pytest.Config) -> Path:
    """The real-data folder ``<rootdir>/../shared/data`` (or ``$MEDZOO_SHARED_DATA``); skips when absent."""
    default = Path(pytestconfig.rootpath) / ".." / "shared" / "data"
    root = Path(os.environ.get("MEDZOO_SHARED_DATA", default)).resolve()
    if not root.is_dir():
        pytest.skip(
            f"real test data not found at {root} (expected <repo root>/../shared/data, "
            "or set MEDZOO_SHARED_DATA); this test runs only where the data folder exists"
        )
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT + WordPiece tokenizer saved in a session-wide temporary folder."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama causal LM + byte-level BPE tokenizer (with ``<image>``) in a temporary folder."""
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm"))
