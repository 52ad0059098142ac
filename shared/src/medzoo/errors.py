"""The exceptions medzoo raises for bad input, bad weights and failed training."""

from __future__ import annotations

from os import PathLike


class MedzooError(Exception):
    """Base class of every error medzoo raises on purpose."""


class MedzooDataError(MedzooError, ValueError):
    """A file or array is not what the reader expected.

    The message always names where the problem is (a path or a field), what was found and what was
    expected, so that a user can fix the input without reading a stack trace.
    """

    def __init__(self, where: str | PathLike, found: str, expected: str) -> None:
        self.where = str(where)
        self.found = found
        self.expected = expected
        super().__init__(f"{self.where}: found {found}; expected {expected}")


class MedzooWeightsError(MedzooError):
    """Weights or a pretrained model could not be loaded."""


class MedzooTrainingError(MedzooError, RuntimeError):
    """Training cannot go on (for example, the loss became NaN)."""
