"""Lightning base classes and the shared command line of every medzoo package.

- :class:`MedzooModule` (``module.py``): optimizer and scheduler from the config, a NaN/inf-loss guard that
  stops training with :class:`~medzoo.errors.MedzooTrainingError`, safetensors export, and the hook
  ``prediction_writer()`` that ``predict`` writes through.
- :class:`MedzooDataModule`, :func:`seeded_split`, :class:`EpochSeededSampler` (``data.py``): the contract's
  data arguments (``root``, ``batch_size``, ``num_workers``, ``seed``, ``predict_root``, ``cache_dir``),
  seeded disjoint splits, and a train loader whose order depends only on ``(seed, epoch)``.
- :class:`PredictionWriter` (``predict.py``): ``predict`` outputs in ``<default_root_dir>/predictions/``.
- :class:`GatherAccumulator` (``metrics.py``): per-sample outputs gathered across DDP ranks.
- :class:`WarmupCosineLR`, :func:`follow_trainer` (``schedules.py``): warm-up + cosine, in optimizer steps
  derived from the trainer (``max_epochs``, ``max_steps`` or ``max_time``) when asked to.
- :class:`AtomicCheckpointIO`, :class:`MedzooCheckpoint`, :class:`EpochSeedCallback`,
  :func:`resolve_ckpt_path` (``trainer.py``).
- :func:`cli`, :class:`Stage`, :class:`MedzooCLI` (``commandline.py``): ``<pkg> fit|validate|test|predict``
  plus the package's further verbs, all listed by ``<pkg> --help``.

Choices (documented for users of the packages):

- Checkpoints go to ``<trainer.default_root_dir>/checkpoints`` (not into a logger's version folder):
  ``last.ckpt``, the newest state, rewritten every epoch, and ``best.ckpt``, the best on the module's
  monitor. ``--ckpt_path last`` / ``--ckpt_path best`` name them (``fit --ckpt_path last`` resumes).
- Logs: ``<root>/csv/version_N/metrics.csv`` and ``<root>/tensorboard/version_N/events.*``; the resolved
  config is saved next to the first logger's files.
- Checkpoints are loaded with ``torch.load(..., weights_only=True)`` (the CLI sets ``--weights_only true`` for
  ``fit/validate/test/predict``); hyperparameters are stored as the plain parsed config.
- Exact resume: an uninterrupted run and a run stopped at an epoch end and resumed from ``last.ckpt`` give
  the same weights, given a fixed seed (loader order from ``(seed, epoch)``; :class:`EpochSeedCallback`
  reseeds torch/numpy/random at the start of each training epoch).
- Errors: run as a console script, a :class:`~medzoo.errors.MedzooError` prints one line and exits 1.
"""

from medzoo.lightning.commandline import MedzooCLI, Stage, cli, packaged_configs, resolve_config_args
from medzoo.lightning.data import EpochSeededSampler, MedzooDataModule, epoch_seed, seeded_split
from medzoo.lightning.metrics import GatherAccumulator
from medzoo.lightning.module import MedzooModule
from medzoo.lightning.predict import PredictionWriter
from medzoo.lightning.schedules import WarmupCosineLR, follow_trainer, trainer_total_steps
from medzoo.lightning.trainer import (
    AtomicCheckpointIO,
    EpochSeedCallback,
    MedzooCheckpoint,
    resolve_ckpt_path,
)

__all__ = [
    "AtomicCheckpointIO",
    "EpochSeedCallback",
    "EpochSeededSampler",
    "GatherAccumulator",
    "MedzooCLI",
    "MedzooCheckpoint",
    "MedzooDataModule",
    "MedzooModule",
    "PredictionWriter",
    "Stage",
    "WarmupCosineLR",
    "cli",
    "epoch_seed",
    "follow_trainer",
    "packaged_configs",
    "resolve_ckpt_path",
    "resolve_config_args",
    "seeded_split",
    "trainer_total_steps",
]
