"""Lightning base classes and the shared command line of every medzoo package.

- :class:`MedzooModule`: a LightningModule base that builds its optimizer and scheduler from the config,
  stops training with :class:`~medzoo.errors.MedzooTrainingError` on a NaN/inf loss and exports its
  weights as safetensors.
- :class:`WarmupCosineLR`: linear warm-up then cosine decay, the schedule most of the papers use.
- :class:`MedzooDataModule` and :func:`seeded_split`: seeded, disjoint splits and a train loader whose
  shuffling depends only on ``(seed, epoch)``, so that a resumed run sees the same batches.
- :func:`cli`: the ``LightningCLI`` every package's ``cli.py`` calls (``fit``, ``validate``, ``test``,
  ``predict``, plus package verbs such as ``zeroshot``).

Choices (documented for users of the packages):

- Checkpoints go to ``<trainer.default_root_dir>/checkpoints`` (not into a logger's version folder), so
  ``--ckpt_path last`` finds the previous run's ``last.ckpt`` in the same folder.
- Logs: ``<root>/csv/version_N/metrics.csv`` and ``<root>/tensorboard/version_N/events.*``; the resolved
  config is saved next to the first logger's files (``<root>/csv/version_N/config.yaml``).
- Checkpoints are loaded by Lightning with ``torch.load(..., weights_only=True)``: Lightning 2.6 passes
  ``weights_only=None`` to ``torch.load``, which means ``True`` for torch >= 2.6 on local files, and the CLI
  sets ``--weights_only true`` by default for ``fit/validate/test/predict``. Checkpoints written through
  :func:`cli` store hyperparameters as the plain config (strings, numbers), so they load with
  ``weights_only=True``.
- Exact resume: an uninterrupted run and a run stopped at an epoch end and resumed from ``last.ckpt`` give
  the same weights, given a fixed seed. The train loader's order and its workers' seeds depend only on
  ``(seed, epoch)`` (loaders from :meth:`MedzooDataModule.train_loader`), and :class:`EpochSeedCallback`
  reseeds torch/numpy/random at the start of each training epoch (dropout, augmentation drawn in the main
  process). A run killed mid-epoch restarts that epoch from its last epoch-end checkpoint.
- Errors: run as a console script, a :class:`~medzoo.errors.MedzooError` prints one line and exits 1.
"""

from __future__ import annotations

import collections.abc
import contextlib
import importlib.resources
import inspect
import json
import math
import os
import random
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerCallable,
    OptimizerCallable,
    ReduceLROnPlateau,
)
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins import TorchCheckpointIO
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset, Sampler

from medzoo.errors import MedzooDataError, MedzooError, MedzooTrainingError

__all__ = [
    "AtomicCheckpointIO",
    "EpochSeedCallback",
    "EpochSeededSampler",
    "MedzooCLI",
    "MedzooDataModule",
    "MedzooModule",
    "WarmupCosineLR",
    "cli",
    "resolve_config_args",
    "seeded_split",
]

_LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


# ----------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from ``warmup_start_factor`` to 1, then cosine decay from 1 to ``min_lr_factor``.

    The factor multiplies each parameter group's initial learning rate. With ``s`` the number of
    ``scheduler.step()`` calls so far (epochs when ``scheduler_interval="epoch"``, optimizer steps when
    ``"step"``)::

        s < warmup_steps:   f = warmup_start_factor + (1 - warmup_start_factor) * s / warmup_steps
        otherwise:          t = min(1, (s - warmup_steps) / max(1, total_steps - warmup_steps))
                            f = min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + cos(pi * t))

    After ``total_steps`` the factor stays at ``min_lr_factor``.

    Args:
        optimizer: the wrapped optimizer.
        warmup_steps: length of the linear warm-up (>= 0).
        total_steps: step at which the cosine reaches ``min_lr_factor`` (> ``warmup_steps``, or equal when
            ``warmup_steps`` is 0 ... use ``total_steps >= warmup_steps``).
        warmup_start_factor: factor at step 0, in [0, 1].
        min_lr_factor: final factor, in [0, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        warmup_start_factor: float = 0.0,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0 or total_steps < warmup_steps:
            raise MedzooDataError(
                "WarmupCosineLR",
                f"warmup_steps={warmup_steps}, total_steps={total_steps}",
                "0 <= warmup_steps <= total_steps",
            )
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.warmup_start_factor = float(warmup_start_factor)
        self.min_lr_factor = float(min_lr_factor)
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, step: int) -> float:
        """The learning-rate factor after ``step`` scheduler steps."""
        if step < self.warmup_steps:
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------------------


class MedzooModule(pl.LightningModule):
    """Base LightningModule of every medzoo package: optimizer/scheduler from config, NaN guard, export.

    Subclasses hold the model, the losses and the steps. They accept ``optimizer`` and ``scheduler`` in their
    own ``__init__`` (typed ``OptimizerCallable`` / ``LRSchedulerCallable`` so LightningCLI builds them from
    YAML) and pass them to ``super().__init__``. The training step returns the loss; the guard checks it
    before the backward pass.

    Class attributes ``monitor`` / ``monitor_mode`` name the validation metric the CLI's best checkpoint
    tracks; the module must ``self.log`` it during validation.

    Args:
        optimizer: ``params -> Optimizer``; default AdamW with torch's defaults.
        scheduler: ``optimizer -> LRScheduler`` or ``None`` (constant learning rate). A
            ``pytorch_lightning.cli.ReduceLROnPlateau`` is stepped on its own ``monitor``.
        scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise MedzooDataError("scheduler_interval", repr(scheduler_interval), "'epoch' or 'step'")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        # Under LightningCLI the hyperparameters are the plain parsed config (so checkpoints load with
        # weights_only=True); elsewhere the callables are left out for the same reason.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, (ReduceLROnPlateau, torch.optim.lr_scheduler.ReduceLROnPlateau)):
            config["monitor"] = getattr(scheduler, "monitor", self.monitor)
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_before_backward(self, loss: torch.Tensor) -> None:
        # Stop at the first non-finite loss instead of silently training a NaN model for hours.
        if not torch.isfinite(loss.detach()).all():
            trainer = self._trainer
            step = trainer.global_step if trainer is not None else "?"
            epoch = trainer.current_epoch if trainer is not None else "?"
            raise MedzooTrainingError(
                f"{type(self).__name__}: the training loss is {loss.detach().float().cpu().item()} "
                f"at global step {step}, epoch {epoch}; expected a finite number. "
                "Hint: lower model.optimizer.init_args.lr, add warm-up or gradient clipping "
                "(--trainer.gradient_clip_val 1.0), check the inputs for NaN/inf, or use "
                "--trainer.precision 32-true if training in half precision."
            )

    def export_weights(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        """Write ``self.state_dict()`` to ``path`` as safetensors (atomic) and return the path.

        Load it back with ``medzoo.weights.load_weights(path)`` or ``safetensors.torch.load_file``.
        """
        from medzoo.weights import save_weights

        return save_weights(self, path, metadata=metadata)


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` into disjoint index arrays with the given fractions, deterministically.

    Sizes are ``floor(f * n)`` with the remainder given to the parts with the largest fractional parts, so
    they always sum to ``n`` when ``sum(fractions) == 1`` (otherwise the leftover indices are dropped).
    Each returned array is sorted (int64).

    Args:
        n: number of items (>= 0).
        fractions: non-negative fractions summing to at most 1, e.g. ``(0.8, 0.1, 0.1)``.
        seed: seed of the permutation; the same seed always gives the same split.
    """
    fractions = [float(f) for f in fractions]
    if n < 0 or not fractions or any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise MedzooDataError(
            "seeded_split",
            f"n={n}, fractions={fractions}",
            "n >= 0 and non-negative fractions summing to <= 1",
        )
    exact = [f * n for f in fractions]
    sizes = [math.floor(e) for e in exact]
    total = min(n, round(sum(exact)))
    by_remainder = sorted(range(len(exact)), key=lambda i: (sizes[i] - exact[i], i))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(order[bounds[i] : bounds[i + 1]]).astype(np.int64) for i in range(len(sizes))]


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch)]).generate_state(1)[0])


class EpochSeededSampler(Sampler[int]):
    """A random permutation of ``range(num_samples)`` that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch; the permutation is drawn lazily when
    iteration starts, so a run resumed at epoch ``e`` sees the same order as an uninterrupted run. The
    ``generator`` is reseeded too, so a DataLoader built with it gives its workers the same seeds.
    """

    def __init__(self, num_samples: int, seed: int = 0, epoch: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(_epoch_seed(self.seed, self.epoch))

    def __iter__(self) -> Iterator[int]:
        order = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch) ^ 0x5EED)
        yield from torch.randperm(self.num_samples, generator=order).tolist()

    def __len__(self) -> int:
        return self.num_samples


class _DeferredIterDataLoader(DataLoader):
    """A DataLoader that starts its workers at the first batch rather than at ``iter()``.

    When resuming, Lightning calls ``iter()`` on the train loader before ``sampler.set_epoch``; a plain
    multi-worker loader would already have drawn its worker seeds and prefetched indices for the wrong epoch.
    """

    def __iter__(self) -> Iterator[Any]:
        yield from super().__iter__()


class MedzooDataModule(pl.LightningDataModule):
    """Base DataModule: batch size, workers and a seed for splits and shuffling.

    Subclasses build their datasets in ``setup`` (splits with :func:`seeded_split` and ``self.seed``) and
    return loaders from :meth:`train_loader` / :meth:`eval_loader`, which apply the shared settings.

    Args:
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seed of the splits and of the training order.
    """

    def __init__(self, batch_size: int = 1, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)

    def train_loader(
        self, dataset: Dataset, *, batch_size: int | None = None, drop_last: bool = False, **kwargs: Any
    ) -> DataLoader:
        """A shuffling DataLoader whose order and worker seeds depend only on ``(self.seed, epoch)``.

        ``batch_size`` overrides ``self.batch_size`` (e.g. for a batch-size schedule by epoch).
        """
        sampler = EpochSeededSampler(len(dataset), seed=self.seed)
        return _DeferredIterDataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            sampler=sampler,
            generator=sampler.generator,
            num_workers=self.num_workers,
            drop_last=drop_last,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def eval_loader(self, dataset: Dataset, *, batch_size: int | None = None, **kwargs: Any) -> DataLoader:
        """A DataLoader in dataset order for validation, test and prediction (``batch_size`` overrides)."""
        return DataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )


# ----------------------------------------------------------------------------------------------------
# Trainer plumbing
# ----------------------------------------------------------------------------------------------------


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
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class EpochSeedCallback(Callback):
    """Reseeds torch, numpy and ``random`` at the start of every training epoch from ``(seed, epoch)``.

    Randomness inside the training step (dropout, stochastic depth, random masks) then depends only on the
    seed and the epoch, so a run resumed from an epoch-end checkpoint continues exactly like an
    uninterrupted one.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = _epoch_seed(self.seed, trainer.current_epoch + 1000)
        random.seed(value)
        np.random.seed(value % 2**32)  # noqa: NPY002 - user code may draw from the legacy global RNG
        torch.manual_seed(value)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def packaged_configs(package: str) -> dict[str, Path]:
    """The YAML configs shipped in ``<package>/configs/`` as ``{name: path}``."""
    try:
        root = importlib.resources.files(package) / "configs"
    except ModuleNotFoundError:
        return {}
    if not root.is_dir():
        return {}
    found = {}
    for entry in root.iterdir():
        if entry.name.endswith((".yaml", ".yml")):
            found[entry.name.rsplit(".", 1)[0]] = Path(str(entry))
    return dict(sorted(found.items()))


def _looks_like_name(value: str) -> bool:
    return "/" not in value and os.sep not in value and not value.endswith((".yaml", ".yml", ".json"))


def resolve_config_args(args: Sequence[str], package: str) -> list[str]:
    """Rewrite ``--config NAME`` (also ``-c NAME``, ``--config=NAME``) to ``<package>/configs/NAME.yaml``.

    A value with a slash or a ``.yaml``/``.yml``/``.json`` suffix, or an existing file, is left as a path.

    Raises:
        MedzooDataError: ``NAME`` is neither a packaged config nor an existing file.
    """

    def resolve(value: str) -> str:
        if not _looks_like_name(value) or Path(value).is_file():
            return value
        available = packaged_configs(package)
        if value in available:
            return str(available[value])
        names = ", ".join(available) or "none"
        raise MedzooDataError(
            f"--config {value}",
            f"no config named {value!r} in package {package!r} (packaged: {names}) and no such file",
            "a packaged config name or a path to a YAML file",
        )

    out: list[str] = []
    expect_value = False
    for token in args:
        if expect_value:
            out.append(resolve(token))
            expect_value = False
        elif token in ("--config", "-c"):
            out.append(token)
            expect_value = True
        elif token.startswith("--config="):
            out.append("--config=" + resolve(token.split("=", 1)[1]))
        else:
            out.append(token)
    return out


class MedzooCLI(LightningCLI):
    """LightningCLI with medzoo's defaults; built by :func:`cli`.

    Adds a ``checkpoint`` ModelCheckpoint (``last`` and the best on the model's ``monitor``; override with
    ``--checkpoint.monitor`` etc.), CSV + TensorBoard loggers under ``trainer.default_root_dir``, an atomic
    checkpoint writer and per-epoch reseeding.
    """

    def __init__(
        self, *args: Any, medzoo_monitor: tuple[str, str] = ("val/loss", "min"), **kwargs: Any
    ) -> None:
        self._medzoo_monitor = medzoo_monitor
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # cli() always passes the (rewritten) argv, so Lightning's "args and sys.argv both given" warning
        # would fire on every console-script run; parse directly instead.
        if isinstance(args, dict):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        monitor, mode = self._medzoo_monitor
        parser.set_defaults(
            {
                "checkpoint.monitor": monitor,
                "checkpoint.mode": mode,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-{epoch}-{step}",
            }
        )

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Trainer.fit/validate/test/predict take weights_only; load user checkpoints safely by default.
        for name, subparser in self._subcommand_parsers.items():
            if "weights_only" in self._subcommand_method_arguments.get(name, []):
                subparser.set_defaults(weights_only=True)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or os.getcwd()
        if config.get("checkpoint") is not None and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        root = trainer_config.get("default_root_dir") or os.getcwd()
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = [
                CSVLogger(save_dir=root, name="csv"),
                TensorBoardLogger(save_dir=root, name="tensorboard", default_hp_metric=False),
            ]
        strategy = trainer_config.get("strategy", "auto")
        plugins = trainer_config.get("plugins")
        plugin_list = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        has_io = any(
            isinstance(p, TorchCheckpointIO) or p.__class__.__name__.endswith("CheckpointIO")
            for p in plugin_list
        )
        simple_strategy = isinstance(strategy, str) and not any(
            s in strategy for s in ("fsdp", "deepspeed", "xla")
        )
        if not has_io and simple_strategy:
            kwargs["plugins"] = [*plugin_list, AtomicCheckpointIO()]
        seed = self._get(self.config, "seed_everything")
        if seed is not False and seed is not None:
            callbacks = trainer_config.get("callbacks") or []
            if not isinstance(callbacks, list):
                callbacks = [callbacks]
            if not any(isinstance(c, EpochSeedCallback) for c in callbacks):
                kwargs["callbacks"] = [*callbacks, EpochSeedCallback(int(seed))]
        return super().instantiate_trainer(**kwargs)


def _command_summary(func: Callable) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def cli(
    model_class: type[pl.LightningModule],
    datamodule_class: type[pl.LightningDataModule] | None,
    *,
    package: str,
    args: Sequence[str] | None = None,
    run: bool = True,
    extra_commands: dict[str, Callable[..., Any]] | None = None,
    trainer_defaults: dict[str, Any] | None = None,
    save_config_kwargs: dict[str, Any] | None = None,
    catch_errors: bool | None = None,
) -> Any:
    """The command line of a medzoo package: ``<pkg> fit|validate|test|predict ...`` plus extra verbs.

    Args:
        model_class: the package's MedzooModule subclass; its ``monitor``/``monitor_mode`` set the best
            checkpoint's defaults.
        datamodule_class: the package's DataModule class.
        package: import name of the package; ``--config NAME`` loads ``<package>/configs/NAME.yaml``.
        args: arguments (default ``sys.argv[1:]``).
        run: run the subcommand (``False``: only instantiate, e.g. to inspect ``cli.model``).
        extra_commands: verb -> typed function, e.g. ``{"zeroshot": zeroshot}``;
            ``<pkg> zeroshot --images DIR`` calls ``zeroshot(images=DIR)``, the arguments parsed by
            jsonargparse from the signature and docstring.
        trainer_defaults: extra Trainer defaults merged over medzoo's.
        save_config_kwargs: passed to Lightning's SaveConfigCallback (default ``{"overwrite": True}``).
        catch_errors: print a :class:`~medzoo.errors.MedzooError` (bad data, NaN loss, missing weights) as one
            ``<package>: error: ...`` line and exit with status 1 instead of raising it. Default: ``True``
            when ``args`` is ``None`` (a console script), ``False`` when given ``args`` (tests, notebooks).

    Returns:
        The ``MedzooCLI`` for Lightning verbs, the function's return value for an extra verb; ``None`` in
        console-script mode (``catch_errors``), so that the script's ``sys.exit(main())`` exits with 0.
    """
    if catch_errors is None:
        catch_errors = args is None
    try:
        result = _cli(
            model_class,
            datamodule_class,
            package,
            args,
            run,
            extra_commands,
            trainer_defaults,
            save_config_kwargs,
        )
    except MedzooError as error:
        if not catch_errors:
            raise
        sys.stderr.write(f"{package}: error: {error}\n")
        raise SystemExit(1) from None
    # A console script runs `sys.exit(main())`: any non-None value would be printed and exit with status 1.
    return None if catch_errors else result


def _cli(
    model_class: type[pl.LightningModule],
    datamodule_class: type[pl.LightningDataModule] | None,
    package: str,
    args: Sequence[str] | None,
    run: bool,
    extra_commands: dict[str, Callable[..., Any]] | None,
    trainer_defaults: dict[str, Any] | None,
    save_config_kwargs: dict[str, Any] | None,
) -> Any:
    argv = list(sys.argv[1:] if args is None else args)
    extra_commands = dict(extra_commands or {})
    clash = set(extra_commands) & set(_LIGHTNING_VERBS)
    if clash:
        raise ValueError(f"extra_commands may not reuse Lightning's verbs: {sorted(clash)}")

    try:
        argv = resolve_config_args(argv, package)
    except MedzooDataError as error:
        sys.stderr.write(f"{package}: error: {error}\n")
        raise SystemExit(2) from None

    if argv and argv[0] in extra_commands:
        return _run_extra_command(argv[0], extra_commands[argv[0]], argv[1:], package)

    description = f"{package}: train, evaluate and run the model (PyTorch Lightning CLI)."
    if extra_commands:
        lines = [f"  {name:<16} {_command_summary(func)}" for name, func in extra_commands.items()]
        description += "\n\nmore commands (run `" + package + " COMMAND --help`):\n" + "\n".join(lines)
    configs = packaged_configs(package)
    if configs:
        description += "\n\npackaged configs (--config NAME): " + ", ".join(configs)

    defaults: dict[str, Any] = {
        "deterministic": "warn",
        "enable_progress_bar": True,
        "log_every_n_steps": 10,
    }
    defaults.update(trainer_defaults or {})
    monitor = (getattr(model_class, "monitor", "val/loss"), getattr(model_class, "monitor_mode", "min"))
    from jsonargparse import DefaultHelpFormatter

    class _Formatter(DefaultHelpFormatter):
        # Keep the line breaks of the command list in `--help`.
        def _fill_text(self, text: str, width: int, indent: str) -> str:
            return "\n".join(indent + line for line in text.splitlines())

    return MedzooCLI(
        model_class,
        datamodule_class,
        medzoo_monitor=monitor,
        seed_everything_default=0,
        trainer_defaults=defaults,
        save_config_kwargs={"overwrite": True, **(save_config_kwargs or {})},
        parser_kwargs={"prog": package, "description": description, "formatter_class": _Formatter},
        args=argv,
        run=run,
    )


def _comma_list_params(func: Callable[..., Any]) -> set[str]:
    """Names of ``func``'s parameters typed as a list/sequence of ``str`` or ``Path``."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: no comma shorthand, jsonargparse still parses them
        return set()
    names = set()
    for name, hint in hints.items():
        options = (
            typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        )
        for option in options:
            origin = typing.get_origin(option)
            if origin in (list, tuple, Sequence, collections.abc.Sequence) and all(
                arg in (str, Path, Ellipsis) for arg in typing.get_args(option)
            ):
                names.add(name)
    return names


def _expand_comma_lists(argv: list[str], names: set[str]) -> list[str]:
    """``--findings a,b`` -> ``--findings ["a", "b"]`` for list-of-string parameters; JSON lists pass."""

    def as_list(value: str) -> str:
        if value.lstrip().startswith("["):
            return value
        return json.dumps([part.strip() for part in value.split(",") if part.strip()])

    out: list[str] = []
    pending = False
    for token in argv:
        if pending:
            out.append(as_list(token))
            pending = False
            continue
        key, eq, value = token.partition("=")
        if key.startswith("--") and key[2:].replace("-", "_") in names:
            if eq:
                out.append(f"{key}={as_list(value)}")
            else:
                out.append(token)
                pending = True
        else:
            out.append(token)
    return out


def _run_extra_command(name: str, func: Callable[..., Any], argv: list[str], package: str) -> Any:
    from jsonargparse import auto_cli

    # Arguments come from the signature's type hints and the docstring; `--help` and `--config` work.
    argv = _expand_comma_lists(argv, _comma_list_params(func))
    return auto_cli(func, args=argv, as_positional=False, prog=f"{package} {name}")
