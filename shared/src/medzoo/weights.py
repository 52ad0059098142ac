"""Weights in and out: safetensors for what we write, safe ``torch.load`` for what users bring.

* ``save_weights`` / ``load_weights``: a flat ``{name: Tensor}`` state dict. We only ever write
  safetensors (no pickle). Torch files (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) are read with
  ``torch.load(..., weights_only=True)``, which refuses arbitrary pickled objects; a Lightning checkpoint
  gives its ``"state_dict"``.
* ``load_hf_model`` / ``load_hf_tokenizer``: Hugging Face ``from_pretrained`` from a local folder or a hub
  id, with ``trust_remote_code=False`` unless asked, and a clear way out when the machine is offline.
  transformers is the optional extra ``medzoo-core[hf]`` and is imported only here, lazily.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medzoo.errors import MedzooWeightsError
from medzoo.io._checks import is_regular_file
from medzoo.io.atomic import atomic_path

__all__ = [
    "load_hf_model",
    "load_hf_tokenizer",
    "load_torch_file",
    "load_weights",
    "read_weights_metadata",
    "save_weights",
]

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _tensors_for_safetensors(state: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage (tied weights) are cloned.

    safetensors refuses shared storage; cloning keeps every key, so the file loads back with
    ``load_state_dict(strict=True)`` at the cost of storing tied weights twice.
    """
    tensors: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise MedzooWeightsError(
                f"{path}: cannot save entry {name!r} of type {type(value).__name__}; "
                "expected a mapping of str to torch.Tensor (a state dict)"
            )
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen and storage.nbytes() > 0:
            tensor = tensor.clone()
        seen.add(key)
        tensors[name] = tensor
    return tensors


def save_weights(
    state: nn.Module | Mapping[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Save a module's ``state_dict()`` (or a state dict) as safetensors, atomically.

    Args:
        state: an ``nn.Module`` or a ``{name: Tensor}`` mapping.
        path: destination, conventionally ``*.safetensors``. Parent folders are created.
        metadata: optional ``{str: str}`` stored in the file header (e.g. package, version, config name);
            read it back with ``read_weights_metadata``.

    Returns:
        ``path`` as a ``Path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    mapping = state.state_dict() if isinstance(state, nn.Module) else state
    tensors = _tensors_for_safetensors(mapping, path)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in (metadata or {}).items()):
        raise MedzooWeightsError(f"{path}: metadata must map str to str, got {metadata!r}")
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``{str: str}`` metadata stored in a safetensors header (empty when none)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError and OSError
        raise MedzooWeightsError(f"{path}: cannot read safetensors header ({err})") from err


def load_weights(path: str | os.PathLike, *, key: str | None = None) -> dict[str, Tensor]:
    """Load a state dict on CPU from safetensors or a torch file, never unpickling arbitrary objects.

    Args:
        path: ``.safetensors``; or ``.ckpt``/``.pt``/``.pth``/``.bin`` loaded with
            ``torch.load(map_location="cpu", weights_only=True)``.
        key: for a torch file holding a dict of dicts, the entry to return (e.g. ``"model"``). By default
            a Lightning checkpoint returns its ``"state_dict"`` and a flat dict of tensors is returned as is.

    Returns:
        ``{name: Tensor}`` on CPU.

    Raises:
        MedzooWeightsError: missing or corrupt file, an unsupported suffix, a pickle holding objects
            other than tensors and plain containers, or no state dict inside.
    """
    path = Path(path)
    if not path.exists():
        raise MedzooWeightsError(f"{path}: no such weights file")
    if not is_regular_file(path):
        raise MedzooWeightsError(f"{path}: found a folder, FIFO or device; expected a weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError for a corrupt header or truncated data
            raise MedzooWeightsError(f"{path}: not a valid safetensors file ({err})") from err
    if suffix not in TORCH_SUFFIXES:
        raise MedzooWeightsError(
            f"{path}: unsupported weights suffix {suffix!r}; expected .safetensors or one of {TORCH_SUFFIXES}"
        )
    return _state_dict_from(load_torch_file(path), path, key)


def load_torch_file(path: str | os.PathLike) -> Any:
    """The content of a torch file (``.ckpt``/``.pt``/``.pth``/``.bin``) on CPU, never unpickling objects.

    ``torch.load(map_location="cpu", weights_only=True)``: tensors and plain containers only. For a package
    that must pick its own entry from a checkpoint; :func:`load_weights` returns the state dict directly.

    Raises:
        MedzooWeightsError: a missing file, one holding Python objects other than tensors and plain
            containers, or a corrupt or truncated one.
    """
    path = Path(path)
    if not is_regular_file(path):
        raise MedzooWeightsError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise MedzooWeightsError(
            f"{path}: refused to load: the file holds Python objects other than tensors and plain containers "
            f"(torch.load weights_only=True). Re-save only the state dict. Details: {err}"
        ) from err
    except Exception as err:  # zip/EOF/runtime errors for corrupt or truncated files
        raise MedzooWeightsError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from err


def _state_dict_from(loaded: Any, path: Path, key: str | None) -> dict[str, Tensor]:
    if not isinstance(loaded, Mapping):
        raise MedzooWeightsError(f"{path}: found a {type(loaded).__name__}; expected a dict of tensors")
    if key is not None:
        if key not in loaded:
            raise MedzooWeightsError(f"{path}: no entry {key!r}; found keys {sorted(map(str, loaded))}")
        loaded = loaded[key]
    elif "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]  # Lightning checkpoint
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        keys = sorted(map(str, loaded)) if isinstance(loaded, Mapping) else type(loaded).__name__
        raise MedzooWeightsError(
            f"{path}: found {keys}, not a flat dict of tensors; pass key=... to pick the state dict entry"
        )
    return dict(loaded)


# ----------------------------------------------------------------------------------------- Hugging Face


def _import_transformers():
    try:
        import transformers
    except ImportError as err:
        raise MedzooWeightsError(
            "loading Hugging Face models needs transformers: pip install 'medzoo-core[hf]'"
        ) from err
    return transformers


def _resolve(name_or_path: str | os.PathLike) -> str:
    """A local folder as a string, or the hub id unchanged; a path-like name that does not exist fails."""
    text = os.fspath(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return str(local)
    looks_like_path = isinstance(name_or_path, os.PathLike) or text.startswith(("/", ".", "~", "\\"))
    if looks_like_path or text.count("/") > 1:
        raise MedzooWeightsError(f"{text}: no such model folder (a local path must be an existing folder)")
    return text


def _offline_help(name: str, what: str, err: Exception) -> MedzooWeightsError:
    return MedzooWeightsError(
        f"could not load the {what} {name!r} ({type(err).__name__}: {err}). If this machine has no network "
        f"or the hub id is not cached, download it on a machine with network "
        f"(`huggingface-cli download {name} --local-dir DIR`) and pass the folder path"
    )


def load_hf_model(
    name_or_path: str | os.PathLike, cls: Any = None, *, trust_remote_code: bool = False, **kwargs: Any
) -> Any:
    """``cls.from_pretrained`` from a local folder or a hub id, with a clear error offline.

    Args:
        name_or_path: a folder written by ``save_pretrained`` or a hub id such as ``"bert-base-uncased"``.
        cls: a transformers class with ``from_pretrained`` (default ``transformers.AutoModel``).
        trust_remote_code: run code shipped with the checkpoint; stays False unless you pass True.
        **kwargs: passed to ``from_pretrained`` (e.g. ``torch_dtype``, ``revision``).

    Raises:
        MedzooWeightsError: transformers missing, the folder missing, or the hub id unreachable/unknown.
            The message tells how to download on another machine and pass the folder.
    """
    transformers = _import_transformers()
    cls = transformers.AutoModel if cls is None else cls
    source = _resolve(name_or_path)
    if trust_remote_code or getattr(cls, "__module__", "").startswith("transformers.models.auto"):
        kwargs["trust_remote_code"] = trust_remote_code
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:  # hub errors subclass OSError; bad ids raise HFValidationError
        raise _offline_help(str(name_or_path), "model", err) from err


def load_hf_tokenizer(
    name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs: Any
) -> Any:
    """``AutoTokenizer.from_pretrained`` from a local folder or a hub id, as ``load_hf_model``."""
    transformers = _import_transformers()
    source = _resolve(name_or_path)
    try:
        tokenizer_cls = transformers.AutoTokenizer
        return tokenizer_cls.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as err:
        raise _offline_help(str(name_or_path), "tokenizer", err) from err
