"""Command line: ``apple-fairness fit|validate|test|predict`` (APPLE on a frozen segmentor) and
``apple-fairness train-segmentor fit|validate|test|predict`` (the baseline segmentor, a second stage)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apple_fairness.data import SegmentationFairnessDataModule
from apple_fairness.module import APPLEModule, SegmentorModule
from medzoo.lightning import Stage, cli

# The package's further verbs (``apple-fairness --help`` lists them).
COMMANDS: dict[str, Any] = {
    "train-segmentor": Stage(
        SegmentorModule,
        SegmentationFairnessDataModule,
        "train the baseline segmentor that APPLE then freezes (configs train_segmentor_paper|demo)",
    )
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``apple-fairness`` console script (tests pass ``args``)."""
    return cli(
        APPLEModule, SegmentationFairnessDataModule, package="apple_fairness", args=args, commands=COMMANDS
    )


if __name__ == "__main__":
    main()
