"""Command line: ``hyspark fit|validate|predict --config paper|demo`` (pre-training) and
``hyspark finetune fit|validate|test|predict --config finetune_paper|finetune_demo`` (segmentation).

``hyspark finetune test`` needs a labelled test set: ``--data.test_root DIR`` (e.g. BTCV's held-out cases).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hyspark.data import CTDataModule
from hyspark.module import HySparKPretrainModule, HySparKSegmentationModule
from medzoo.lightning import Stage, cli

COMMANDS = {
    "finetune": Stage(
        HySparKSegmentationModule,
        CTDataModule,
        "segmentation fine-tuning of a pre-trained encoder (fit|validate|test|predict)",
    ),
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``hyspark`` console script; returns the LightningCLI (tests pass ``args``)."""
    return cli(HySparKPretrainModule, CTDataModule, package="hyspark", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()
