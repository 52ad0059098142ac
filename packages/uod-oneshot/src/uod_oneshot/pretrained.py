"""Optional ImageNet weights for the stage-1 VGG19 encoders (a local file or timm's hub copy)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from medzoo.errors import MedzooDataError
from uod_oneshot.models import UniversalSSLNet

__all__ = ["load_vgg19_weights"]

log = logging.getLogger(__name__)


def _read_state(source: str) -> dict[str, torch.Tensor]:
    if source == "timm":
        import timm

        try:
            return timm.create_model("vgg19", pretrained=True).state_dict()
        except Exception as err:  # offline, or no hub access
            raise MedzooDataError(
                "model.pretrained",
                f"'timm' (download failed: {err})",
                "a local vgg19 weight file when offline",
            ) from err
    path = Path(source).expanduser()
    if not path.is_file():
        raise MedzooDataError(
            path, "no such file", "vgg19 weights (.safetensors, .pth; timm or torchvision keys)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_vgg19_weights(model: UniversalSSLNet, source: str | None) -> int:
    """Copy ``features.*`` VGG19 weights into every domain's encoder; returns the number of tensors loaded.

    Args:
        model: the stage-1 network (encoder widths/depths must be VGG19's).
        source: ``None`` (keep the random initialisation, logged as a warning), ``"timm"`` (timm's ImageNet
            ``vgg19``, downloaded through the Hugging Face hub) or a file path.
    """
    if source is None:
        log.warning(
            "uod-oneshot: stage-1 VGG19 encoders start from RANDOM weights (model.pretrained is null)"
        )
        return 0
    state = {k: v for k, v in _read_state(source).items() if k.startswith("features.")}
    loaded = 0
    for encoder in model.encoders:
        own = encoder.state_dict()
        mismatched = [k for k in own if k not in state or state[k].shape != own[k].shape]
        if mismatched:
            raise MedzooDataError(
                f"model.pretrained ({source})",
                f"missing or mis-shaped {mismatched[:3]}",
                "VGG19 features.* weights",
            )
        encoder.load_state_dict({k: state[k] for k in own})
        loaded += len(own)
    log.info(
        "uod-oneshot: loaded ImageNet VGG19 weights from %s into %d encoders", source, len(model.encoders)
    )
    return loaded
