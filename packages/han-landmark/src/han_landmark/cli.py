"""``han-landmark fit | validate | test | predict`` (LightningCLI with medzoo's defaults).

Examples::

    han-landmark fit --config demo                       # synthetic phantoms, CPU, a few minutes
    han-landmark test --config demo --ckpt_path last     # runs/han-landmark-demo/checkpoints/last.ckpt
    han-landmark predict --config demo --ckpt_path last --data.predict_root my_xrays/
    han-landmark fit --config paper --data.root /data/ISBI2015

``predict`` writes per-image CSV/JSON/overlay PNGs and ``summary.csv`` into
``<trainer.default_root_dir>/predictions/``.
"""

from __future__ import annotations

from collections.abc import Sequence

from han_landmark.data import LandmarkDataModule
from han_landmark.module import HANLandmarkModule
from medzoo.lightning import cli

# No verbs beyond Lightning's fit/validate/test/predict.
COMMANDS: dict = {}


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``han-landmark`` command (returns None so the console script exits with 0)."""
    cli(HANLandmarkModule, LandmarkDataModule, package="han_landmark", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()
