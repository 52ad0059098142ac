"""Atomic writers: a file appears complete under its final name, or not at all.

Every writer creates a temporary file in the destination folder (so that ``os.replace`` is an atomic
rename on the same file system), flushes and fsyncs it, and renames it over the destination. If anything
fails, the temporary file is removed and the destination is left as it was. A crash mid-write therefore
never leaves a half-written CSV, PNG, NIfTI or checkpoint behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from medzoo.errors import MedzooDataError

__all__ = ["atomic_path", "atomic_write", "fsync_path", "write_csv", "write_json", "write_png", "write_text"]


def _file_mode() -> int:
    """The permissions ``open()`` would give a new file (``0o666`` minus the umask).

    ``mkstemp`` creates files readable by the owner only; outputs should look like any other file.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _split_suffix(name: str) -> tuple[str, str]:
    """Split ``name`` into stem and full suffix, keeping double suffixes like ``.nii.gz`` together."""
    for double in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(double):
            return name[: -len(double)], name[-len(double) :]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by path (a folder's fsync makes a rename inside it durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the rename is still atomic there
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    For libraries that insist on writing to a file name themselves (nibabel, safetensors). The temporary
    name keeps the suffix of ``path`` (e.g. ``.nii.gz``) because such libraries choose the format from it.
    Parent folders are created. On success the temporary file is fsynced, renamed over ``path``, and the
    folder is fsynced so that the rename itself survives a crash. On error the temporary file is removed
    and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split_suffix(path.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path`` atomically.

    Args:
        path: final destination. Parent folders are created.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, written with ``encoding`` and ``newline=""`` so that
            writers such as ``csv`` and pandas control line endings themselves).
        encoding: text encoding for ``mode="w"``.

    Example:
        >>> with atomic_write("out/report.txt", "w") as f:  # doctest: +SKIP
        ...     f.write("done\\n")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        text_kwargs = {"encoding": encoding, "newline": ""} if mode == "w" else {}
        with open(tmp, mode, **text_kwargs) as handle:
            yield handle
            handle.flush()


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable (json's ``default`` hook)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON, atomically. numpy scalars/arrays and paths are converted."""
    text = json.dumps(obj, indent=indent, default=_json_default, allow_nan=False, ensure_ascii=False)
    return write_text(path, text + "\n")


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically (no newline translation: what you pass is what lands on disk)."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def write_csv(path: str | os.PathLike, df: Any, *, index: bool = False) -> Path:
    """Write a ``pandas.DataFrame`` as CSV, atomically (without the index unless ``index=True``)."""
    with atomic_write(path, "w") as handle:
        df.to_csv(handle, index=index, lineterminator="\n")
    return Path(path)


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an image as PNG, atomically.

    Args:
        path: destination.
        array: (H, W) grey as uint8 or uint16, or (H, W, 3) RGB / (H, W, 4) RGBA as uint8. Values are
            written as they are (no scaling); 16-bit grey round-trips exactly through ``read_image``.
    """
    from PIL import Image

    array = np.asarray(array)
    grey = array.ndim == 2
    colour = array.ndim == 3 and array.shape[2] in (3, 4)
    if not (grey or colour):
        raise MedzooDataError(path, f"an array of shape {array.shape}", "(H, W) grey or (H, W, 3|4) colour")
    if array.dtype not in (np.uint8, np.uint16) or (colour and array.dtype != np.uint8):
        raise MedzooDataError(
            path, f"dtype {array.dtype} with shape {array.shape}", "uint8 or uint16 grey, or uint8 RGB/RGBA"
        )
    buffer = io.BytesIO()
    # Pillow infers L / I;16 / RGB / RGBA from dtype and shape.
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)
