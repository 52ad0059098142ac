"""Where the packages' demos write the synthetic datasets they generate on first use."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir(package: str | None = None) -> Path:
    """``$MEDZOO_CACHE``, else ``$XDG_CACHE_HOME/medzoo``, else ``~/.cache/medzoo``; then ``/<package>``.

    Args:
        package: a sub-folder per package (e.g. ``"hyspark"``), or ``None`` for the shared root.
    """
    if os.environ.get("MEDZOO_CACHE"):
        root = Path(os.environ["MEDZOO_CACHE"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "medzoo"
    return root / package if package else root
