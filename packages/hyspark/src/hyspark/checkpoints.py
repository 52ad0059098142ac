"""Reading encoder weights from the files a user passes to ``--model.pretrained``: this package's
checkpoints and exported weights, and the reference implementation's pre-training checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from hyspark.models import convert_reference_state_dict
from medzoo.errors import MedzooWeightsError
from medzoo.weights import TORCH_SUFFIXES, load_torch_file, load_weights

__all__ = ["encoder_state_from_checkpoint", "read_checkpoint_state"]


def read_checkpoint_state(path: str | os.PathLike, key: str | None = None) -> dict[str, Tensor]:
    """The tensors of a weights file, read without unpickling objects (``torch.load(weights_only=True)``).

    ``.safetensors`` files are read whole. A torch file (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) gives its
    entry ``key`` when set; otherwise its ``"state_dict"`` (a Lightning checkpoint), else its ``"module"``
    (the reference's pre-training checkpoint ``{'module': ..., 'optimizer': ..., 'epoch': ...}``), else the
    file itself. Entries that are not tensors (the reference's ``config`` dict) are dropped.
    """
    path = Path(path)
    if path.suffix.lower() not in TORCH_SUFFIXES:
        return load_weights(path)
    loaded = load_torch_file(path)
    if not isinstance(loaded, Mapping):
        raise MedzooWeightsError(f"{path}: found a {type(loaded).__name__}; expected a dict of tensors")
    if key is None:
        key = next((k for k in ("state_dict", "module") if isinstance(loaded.get(k), Mapping)), None)
    if key is not None:
        if not isinstance(loaded.get(key), Mapping):
            raise MedzooWeightsError(
                f"{path}: no dict entry {key!r} (model.pretrained_key); found keys {sorted(map(str, loaded))}"
            )
        loaded = loaded[key]
    tensors = {k: v for k, v in loaded.items() if isinstance(v, Tensor)}
    if not tensors:
        raise MedzooWeightsError(
            f"{path}: no tensors in {'entry ' + repr(key) if key else 'the file'}; "
            f"found keys {sorted(map(str, loaded))[:10]}; set model.pretrained_key to the state dict entry"
        )
    return tensors


def encoder_state_from_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder weights from any supported layout: this package's Lightning checkpoint / exported weights
    (``model.encoder.*``), a ``HySparK`` state dict (``encoder.*``), a bare ``HybridEncoder`` state dict, or
    the reference implementation's ``embeddings.*`` / ``mae.*`` keys (see convert_reference_state_dict)."""
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return convert_reference_state_dict(state)
