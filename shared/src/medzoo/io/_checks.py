"""Checks every reader runs before it reads: a regular file, and a bounded size.

A FIFO or a device (``/dev/zero``) given as a file would block a reader or feed it without end, a folder or a
symlink loop raises a raw ``OSError``; each becomes one :class:`~medzoo.errors.MedzooDataError` here.

``MAX_ELEMENTS`` bounds the pixels or voxels a header may claim before anything is allocated (default
2**28, about 268 million: a 645^3 volume or a 16k x 16k image); set ``MEDZOO_MAX_ELEMENTS`` to change it.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from medzoo.errors import MedzooDataError

MAX_ELEMENTS = int(os.environ.get("MEDZOO_MAX_ELEMENTS", str(2**28)))


def require_regular_file(path: str | os.PathLike, expected: str) -> int:
    """The size in bytes of ``path``, which must be an existing regular file (symlinks followed).

    Raises:
        MedzooDataError: missing, a folder, a FIFO/device/socket, a symlink loop or an unreadable path.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MedzooDataError(path, "no such file", expected) from None
    except OSError as err:  # ELOOP (symlink loop), EACCES, ENAMETOOLONG ...
        raise MedzooDataError(path, f"an unreadable path ({err.strerror})", expected) from None
    if stat.S_ISDIR(info.st_mode):
        raise MedzooDataError(path, "a folder", expected)
    if not stat.S_ISREG(info.st_mode):
        raise MedzooDataError(path, "not a regular file (a FIFO, device or socket)", expected)
    return int(info.st_size)


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for an existing regular file (never blocks on a FIFO or a device)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_element_count(path: str | os.PathLike | Path, shape: Sequence[int], what: str) -> None:
    """Refuse a header that claims more than ``MAX_ELEMENTS`` pixels/voxels, before allocating them."""
    count = math.prod(int(s) for s in shape)
    if count > MAX_ELEMENTS:
        raise MedzooDataError(
            path,
            f"a header claiming {what} of shape {tuple(int(s) for s in shape)} ({count:,} elements)",
            f"at most {MAX_ELEMENTS:,} elements (set MEDZOO_MAX_ELEMENTS to allow more)",
        )
