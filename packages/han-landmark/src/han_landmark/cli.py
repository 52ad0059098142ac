"""``han-landmark fit | validate | test | predict`` (LightningCLI with medzoo's defaults).

Examples::

    han-landmark fit --config demo                       # synthetic phantoms, CPU, a few minutes
    han-landmark test --config demo --ckpt_path lightning_logs/checkpoints/last.ckpt
    han-landmark predict --config demo --ckpt_path best.ckpt --data.predict_images my_xrays/
    han-landmark fit --config paper --data.root /data/ISBI2015
"""

from __future__ import annotations

from collections.abc import Sequence

from medzoo.lightning import cli

from .data import LandmarkDataModule
from .module import HANLandmarkModule


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``han-landmark`` command (returns None so the console script exits with 0)."""
    cli(HANLandmarkModule, LandmarkDataModule, package="han_landmark", args=args)


if __name__ == "__main__":
    main()
