"""The command line of every package: LightningCLI with medzoo defaults, packaged configs and extra verbs."""

from __future__ import annotations

import collections.abc
import importlib.resources
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins import TorchCheckpointIO

from medzoo.errors import MedzooDataError, MedzooError
from medzoo.lightning.trainer import (
    AtomicCheckpointIO,
    EpochSeedCallback,
    MedzooCheckpoint,
    resolve_ckpt_path,
)

__all__ = ["MedzooCLI", "Stage", "cli", "packaged_configs", "resolve_config_args"]

_LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


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


@dataclass(frozen=True)
class Stage:
    """A further Lightning stage of a package, run as ``<pkg> <verb> fit|validate|test|predict ...``.

    Example: ``cli(PretrainModule, CTDataModule, package="hyspark",
    commands={"finetune": Stage(SegmentationModule, CTDataModule, "fine-tune a pre-trained encoder")})``
    gives ``hyspark finetune fit --config finetune_demo``.

    Args:
        model_class: the stage's MedzooModule subclass.
        datamodule_class: the stage's DataModule class.
        summary: one line for ``<pkg> --help``.
    """

    model_class: type[pl.LightningModule]
    datamodule_class: type[pl.LightningDataModule] | None
    summary: str = ""


class MedzooCLI(LightningCLI):
    """LightningCLI with medzoo's defaults; built by :func:`cli`.

    Adds a ``checkpoint`` :class:`MedzooCheckpoint` (``last.ckpt``, the newest state, and ``best.ckpt``, the
    best on the model's ``monitor``; override with ``--checkpoint.monitor`` etc.; ``validate``/``test``/
    ``predict`` take ``--ckpt_path best|last``), CSV + TensorBoard loggers under
    ``trainer.default_root_dir``, an atomic checkpoint writer and per-epoch reseeding.
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
        parser.add_lightning_class_args(MedzooCheckpoint, "checkpoint")
        monitor, mode = self._medzoo_monitor
        parser.set_defaults(
            {
                "checkpoint.monitor": monitor,
                "checkpoint.mode": mode,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best",
                # A new (not resumed) fit in a used folder replaces its last.ckpt/best.ckpt instead of
                # writing last-v1.ckpt/best-v1.ckpt beside them, which `--ckpt_path last|best` would miss.
                "checkpoint.enable_version_counter": False,
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
        # Lightning knows `best` only inside the process that ran `fit`; name the file for a later one.
        if self.subcommand in ("validate", "test", "predict") and config.get("ckpt_path") == "best":
            folder = config.checkpoint.dirpath if config.get("checkpoint") is not None else None
            config.ckpt_path = str(resolve_ckpt_path("best", root, folder))

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
        if self.subcommand == "predict":
            kwargs["callbacks"] = self._with_prediction_writer(trainer_config, kwargs.get("callbacks"))
        seed = self._get(self.config, "seed_everything")
        if seed is not False and seed is not None:
            callbacks = kwargs.get("callbacks", trainer_config.get("callbacks")) or []
            if not isinstance(callbacks, list):
                callbacks = [callbacks]
            if not any(isinstance(c, EpochSeedCallback) for c in callbacks):
                kwargs["callbacks"] = [*callbacks, EpochSeedCallback(int(seed))]
        return super().instantiate_trainer(**kwargs)

    def _with_prediction_writer(self, trainer_config: Any, given: Any) -> list[Any]:
        # The contract: `predict` always writes through the module's PredictionWriter into
        # <default_root_dir>/predictions/, unless the config already lists a writer of that type.
        callbacks = given if given is not None else trainer_config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        make_writer = getattr(self.model, "prediction_writer", None)
        writer = make_writer() if callable(make_writer) else None
        if writer is None:
            raise MedzooDataError(
                "predict",
                f"{type(self.model).__name__} has no prediction writer",
                "a module that can predict",
            )
        if not any(isinstance(c, type(writer)) for c in callbacks):
            callbacks.append(writer)
        return callbacks


def _command_summary(command: Callable | Stage) -> str:
    if isinstance(command, Stage):
        return command.summary or f"a further Lightning stage ({command.model_class.__name__})"
    func = command
    doc = inspect.getdoc(func) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def cli(
    model_class: type[pl.LightningModule],
    datamodule_class: type[pl.LightningDataModule] | None,
    *,
    package: str,
    args: Sequence[str] | None = None,
    run: bool = True,
    commands: dict[str, Callable[..., Any] | Stage] | None = None,
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
        commands: the package's further verbs, each a typed function or a :class:`Stage`. A function, e.g.
            ``{"zeroshot": zeroshot}``: ``<pkg> zeroshot --ckpt_path last`` calls ``zeroshot(ckpt_path=...)``,
            the arguments parsed by jsonargparse from the signature and docstring. A :class:`Stage`: a second
            LightningCLI, ``<pkg> finetune fit --config finetune_demo``. ``<pkg> --help`` lists them all.
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
            commands,
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
    commands: dict[str, Callable[..., Any] | Stage] | None,
    trainer_defaults: dict[str, Any] | None,
    save_config_kwargs: dict[str, Any] | None,
    prog: str | None = None,
) -> Any:
    argv = list(sys.argv[1:] if args is None else args)
    commands = dict(commands or {})
    clash = set(commands) & set(_LIGHTNING_VERBS)
    if clash:
        raise ValueError(f"commands may not reuse Lightning's verbs: {sorted(clash)}")

    try:
        argv = resolve_config_args(argv, package)
    except MedzooDataError as error:
        sys.stderr.write(f"{package}: error: {error}\n")
        raise SystemExit(2) from None

    if argv and argv[0] in commands:
        command = commands[argv[0]]
        if isinstance(command, Stage):
            return _cli(
                command.model_class,
                command.datamodule_class,
                package,
                argv[1:],
                run,
                None,
                trainer_defaults,
                save_config_kwargs,
                prog=f"{package} {argv[0]}",
            )
        return _run_extra_command(argv[0], command, argv[1:], package)

    description = f"{package}: train, evaluate and run the model (PyTorch Lightning CLI)."
    if commands:
        lines = [f"  {name:<16} {_command_summary(command)}" for name, command in commands.items()]
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
        parser_kwargs={"prog": prog or package, "description": description, "formatter_class": _Formatter},
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
