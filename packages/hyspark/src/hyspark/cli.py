"""Command line: ``hyspark fit|validate|predict --config paper|demo`` (pre-training) and
``hyspark finetune fit|validate|test|predict --config finetune_paper|finetune_demo`` (segmentation)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hyspark.data import CTDataModule
from hyspark.module import HySparKPretrainModule, HySparKSegmentationModule
from medzoo.lightning import cli


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``hyspark`` console script; returns the LightningCLI (tests pass ``args``)."""
    argv = list(sys.argv[1:] if args is None else args)
    catch = args is None
    if argv and argv[0] == "finetune":
        return cli(
            HySparKSegmentationModule, CTDataModule, package="hyspark", args=argv[1:], catch_errors=catch
        )
    return cli(HySparKPretrainModule, CTDataModule, package="hyspark", args=argv, catch_errors=catch)


if __name__ == "__main__":
    main()
