"""``ltml-cxr fit | validate | test | predict`` (LightningCLI with medzoo's defaults).

Examples::

    ltml-cxr fit --config demo                                # generated long-tailed CXR set, CPU, minutes
    ltml-cxr test --config demo --ckpt_path best              # runs/ltml-cxr-demo/checkpoints/best.ckpt
    ltml-cxr predict --config demo --ckpt_path best --data.predict_root my_xrays/
    ltml-cxr fit --config paper --data.root /data/mimic-cxr-jpg --model.loss anr_llm
    ltml-cxr fit --config paper --data.root /data/mimic-cxr-jpg --ckpt_path last   # resume (newest state)

``--ckpt_path best`` is the epoch with the best validation mAP (``checkpoints/best.ckpt``); ``last.ckpt`` is
the newest state, rewritten every epoch, which ``fit --ckpt_path last`` resumes.

``predict`` writes ``<stem>.csv`` (class probabilities) per image and ``summary.csv`` into
``<trainer.default_root_dir>/predictions/``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ltml_cxr.data import LTMLDataModule
from ltml_cxr.module import LTMLModule
from medzoo.lightning import cli

# No verbs beyond Lightning's fit/validate/test/predict.
COMMANDS: dict = {}


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``ltml-cxr`` command (returns None so the console script exits with 0)."""
    cli(LTMLModule, LTMLDataModule, package="ltml_cxr", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()
