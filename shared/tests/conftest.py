"""Shared fixtures for the medzoo-core tests.

Real data lives read-only next to the repository, at ``<repo root>/../shared/data`` (CI has it there too).
A user's clone may not have it, so every test that needs it asks for the ``shared_data`` fixture, which
skips with a clear reason instead of failing. ``MEDZOO_SHARED_DATA`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder ``<repo root>/../shared/data``; skips the test when it is absent."""
    root = Path(os.environ.get("MEDZOO_SHARED_DATA", DEFAULT_SHARED_DATA)).resolve()
    if not root.is_dir():
        pytest.skip(
            f"real test data not found at {root} (expected <repo root>/../shared/data, "
            "or set MEDZOO_SHARED_DATA); this test runs only where the data folder exists"
        )
    return root
