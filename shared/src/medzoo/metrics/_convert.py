"""Input conversion shared by the metric modules (torch tensors and array-likes to numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medzoo.errors import MedzooDataError


def to_numpy(x: Any, *, dtype: Any = None) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU first.

    Torch is not imported here: anything with ``detach`` is treated as a tensor, so that the metrics stay
    importable (and cheap) without touching torch.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def check_same_shape(a: np.ndarray, b: np.ndarray, where: str, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise MedzooDataError(
            where, f"{names[0]} of shape {a.shape} and {names[1]} of shape {b.shape}", "equal shapes"
        )
