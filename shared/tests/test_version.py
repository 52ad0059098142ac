"""The import's version is the distribution's (pyproject.toml, the top CHANGELOG entry)."""

import re
from pathlib import Path

import tomllib

import medzoo

CORE = Path(__file__).resolve().parents[1]


def test_version_matches_pyproject_and_changelog():
    version = tomllib.loads((CORE / "pyproject.toml").read_text())["project"]["version"]
    top = re.search(r"^## (\S+)", (CORE / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert medzoo.__version__ == version
    assert top is not None and top.group(1) == version
