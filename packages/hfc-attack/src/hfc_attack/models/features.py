"""Hierarchical features: every ReLU output of a classifier, global-average-pooled, through forward hooks."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from medzoo.errors import MedzooDataError

__all__ = ["FeatureExtractor"]


class FeatureExtractor(nn.Module):
    """Runs ``model`` and returns its logits and the pooled output of every ReLU (the HFC features).

    A forward hook on each ``nn.ReLU`` (any ``layer_types``) records its output; a spatial output
    ``(B, C, *spatial)`` is averaged to ``(B, C)``; a vector output ``(B, C)`` is kept. A module called
    several times per forward (torchvision's Bottleneck reuses one ReLU three times) yields one feature
    per call, named ``name``, ``name#1``, ``name#2``. Layers with more than ``max_channels`` channels are
    left out (the reference skips them: their GMM covariances are too large), as are layers not in
    ``layers`` when given.

    Args:
        model: any classifier ``(B, C, H, W[, D]) -> (B, K)``; inputs are passed through unchanged.
        max_channels: keep only features with at most this many channels (``None``: keep all).
        layers: keep only these feature names (after the channel filter); ``None``: all.
        layer_types: the module types whose outputs are features.

    Raises:
        MedzooDataError: ``model`` has no module of ``layer_types``.
    """

    def __init__(
        self,
        model: nn.Module,
        max_channels: int | None = 512,
        layers: list[str] | None = None,
        layer_types: tuple[type[nn.Module], ...] = (nn.ReLU,),
    ) -> None:
        super().__init__()
        self.model = model
        self.max_channels = max_channels
        self.layers = None if layers is None else list(layers)
        self._targets = [(name, m) for name, m in model.named_modules() if isinstance(m, layer_types)]
        if not self._targets:
            kinds = ", ".join(t.__name__ for t in layer_types)
            raise MedzooDataError(
                type(model).__name__, f"no {kinds} layers", f"a classifier with {kinds} activations"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` -> (logits (B, K), {feature name: (B, C_l)}) in call order."""
        features: dict[str, torch.Tensor] = {}
        calls: Counter[str] = Counter()

        def record(name: str):
            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                key = name if calls[name] == 0 else f"{name}#{calls[name]}"
                calls[name] += 1
                # Pool right away: a later in-place op (timm's `x += shortcut`) must not change the feature.
                pooled = output.flatten(2).mean(-1) if output.dim() > 2 else output
                if self.max_channels is not None and pooled.shape[1] > self.max_channels:
                    return
                if self.layers is not None and key not in self.layers:
                    return
                features[key] = pooled

            return hook

        handles = [module.register_forward_hook(record(name)) for name, module in self._targets]
        try:
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        if self.layers is not None:
            missing = [name for name in self.layers if name not in features]
            if missing:
                raise MedzooDataError(
                    "FeatureExtractor.layers", f"names {missing} not produced", f"names among {list(calls)}"
                )
        return logits, features
