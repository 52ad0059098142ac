"""Tables of free text (radiology reports) read with one check, for the packages' report-processing verbs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medzoo.errors import MedzooDataError
from medzoo.io._checks import require_regular_file

__all__ = ["read_text_column"]


def read_text_column(path: str | os.PathLike, column: str) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV and the non-empty text of ``column`` in every row: ``(table, texts)``.

    Raises:
        MedzooDataError: not a file, no such column, or an empty cell (named by row and column).
    """
    path = Path(path)
    require_regular_file(path, "a CSV of reports")
    table = pd.read_csv(path)
    if column not in table:
        raise MedzooDataError(path, f"columns {list(table.columns)}", f"a {column!r} column")
    texts = table[column].tolist()
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise MedzooDataError(
                f"{path} (row {row}, column {column})", "an empty report", "text in every row"
            )
    return table, texts
