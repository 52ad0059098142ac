"""Trainer plumbing: the atomic checkpoint writer, the checkpoint callback, per-epoch reseeding and
checkpoint-path resolution."""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn

from medzoo.errors import MedzooDataError
from medzoo.lightning.data import epoch_seed

__all__ = [
    "CHECKPOINT_KEYWORDS",
    "AtomicCheckpointIO",
    "EpochSeedCallback",
    "MedzooCheckpoint",
    "resolve_ckpt_path",
]

# `--ckpt_path last|best`: the newest state of a run, and the best one on its monitor.
CHECKPOINT_KEYWORDS = {"last": "last.ckpt", "best": "best.ckpt"}

# A run with --trainer.max_time stores the state of Lightning's Timer (the time already spent) in its
# checkpoints. `validate`/`test`/`predict` (and a resumed fit without max_time) have no Timer, so Lightning
# warns on every later load that the callback is missing, although nothing is lost: only a resumed
# time-limited fit needs that state, and it has a Timer. Silence exactly that case (only the Timer missing).
TIMER_STATE_WARNING = (
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided "
    r"during `Trainer` instantiation\. Please add the following callbacks: \['Timer'\]\."
)
warnings.filterwarnings("ignore", message=TIMER_STATE_WARNING, category=UserWarning)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target folder, then ``os.replace``s it.

    A crash or a kill during saving leaves the previous ``last.ckpt`` intact instead of a truncated file.
    Remote paths (``s3://`` ...) fall back to Lightning's own transactional save.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        fs = get_filesystem(path)
        if storage_options is not None or "file" not in _protocols(fs):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        from medzoo.io import atomic_write

        # Temporary file beside the target, fsynced, renamed, folder fsynced; permissions follow the umask.
        with atomic_write(Path(path), "wb") as handle:
            torch.save(checkpoint, handle)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class MedzooCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose ``last.ckpt`` is the newest state at every save point.

    pytorch-lightning 2.6 rewrites ``last.ckpt`` only at a step where it also wrote a top-k checkpoint. Once
    the monitor stops improving, ``last.ckpt`` then stays at the best epoch: ``fit --ckpt_path last``
    restarts from there instead of where the run stopped. Here ``last.ckpt`` follows every save point (every
    epoch); the best state on the monitor is the top-k file (``best.ckpt`` with medzoo's default filename),
    which ``--ckpt_path best`` names.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_written_step: int | None = None

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        """Writes ``last.ckpt`` unless Lightning already wrote it at this step (or must not write at all)."""
        skip = (
            not self.save_last
            or bool(trainer.fast_dev_run)
            or trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
            or self._last_written_step == trainer.global_step
        )
        if not skip:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class EpochSeedCallback(Callback):
    """Reseeds torch, numpy and ``random`` at the start of every training epoch from ``(seed, epoch)``.

    Randomness inside the training step (dropout, stochastic depth, random masks) then depends only on the
    seed and the epoch, so a run resumed from an epoch-end checkpoint continues exactly like an
    uninterrupted one.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = epoch_seed(self.seed, trainer.current_epoch + 1000)
        random.seed(value)
        np.random.seed(value % 2**32)  # noqa: NPY002 - user code may draw from the legacy global RNG
        torch.manual_seed(value)


def resolve_ckpt_path(
    ckpt_path: str | os.PathLike,
    root_dir: str | os.PathLike = ".",
    checkpoint_dir: str | os.PathLike | None = None,
) -> Path:
    """A checkpoint path from the command line: ``last`` means ``<root_dir>/checkpoints/last.ckpt`` (the
    newest state of the run), ``best`` ``<root_dir>/checkpoints/best.ckpt`` (the best on the run's monitor);
    ``checkpoint_dir`` replaces ``<root_dir>/checkpoints`` (a run with ``--checkpoint.dirpath``).

    Raises:
        MedzooDataError: the resolved file does not exist.
    """
    keyword = CHECKPOINT_KEYWORDS.get(str(ckpt_path))
    folder = Path(root_dir) / "checkpoints" if checkpoint_dir is None else Path(checkpoint_dir)
    path = folder / keyword if keyword else Path(ckpt_path)
    if not path.is_file():
        raise MedzooDataError(
            f"--ckpt_path {ckpt_path}",
            f"no such file ({path})",
            "a checkpoint written by `fit`, `best` for <default_root_dir>/checkpoints/best.ckpt (the best "
            "epoch on the monitor) or `last` for <default_root_dir>/checkpoints/last.ckpt (the newest)",
        )
    return path
