"""Named model configurations: one lookup for every package's ``create_model``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from medzoo.errors import MedzooDataError

__all__ = ["build_model", "model_settings"]

T = TypeVar("T")


def model_settings(configs: Mapping[str, Mapping[str, Any]], name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of ``configs[name]`` with ``overrides`` applied.

    Raises:
        MedzooDataError: ``name`` is not one of the configs (the message lists them).
    """
    if name not in configs:
        raise MedzooDataError("model variant", repr(name), f"one of {', '.join(sorted(configs))}")
    return {**dict(configs[name]), **overrides}


def build_model(
    configs: Mapping[str, Mapping[str, Any]], factory: Callable[..., T], name: str, **overrides: Any
) -> T:
    """``factory(**configs[name], **overrides)``, with a clear error for a bad name or override key.

    Args:
        configs: the package's ``MODEL_CONFIGS`` (names include ``paper`` and ``tiny``).
        factory: the model class (or a function) that takes the settings as keyword arguments.
        name: the configuration name, e.g. ``"paper"``.
        **overrides: settings replacing the named ones.
    """
    settings = model_settings(configs, name, **overrides)
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(settings) - set(parameters))
        if unknown:
            raise MedzooDataError(
                f"model variant {name!r}",
                f"unknown settings {unknown}",
                f"arguments of {getattr(factory, '__name__', factory)}: {', '.join(parameters)}",
            )
    try:
        return factory(**settings)
    except TypeError as error:
        # A factory that forwards **kwargs (e.g. to a backbone) only finds a bad key when it is called.
        if "unexpected keyword argument" not in str(error):
            raise
        raise MedzooDataError(
            f"model variant {name!r}", f"unknown settings ({error})", "valid settings"
        ) from error
