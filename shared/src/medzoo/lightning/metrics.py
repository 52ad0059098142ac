"""An epoch accumulator that is correct under DDP, for metrics torchmetrics does not have."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from medzoo.errors import MedzooDataError

__all__ = ["GatherAccumulator"]


class GatherAccumulator(Metric):
    """Collects per-sample tensors over an epoch and gathers them from every DDP rank.

    ``compute()`` returns ``{name: tensor}`` over the whole split, identical on every rank, so that a metric
    computed from it (scikit-learn AUROC, MRE, ...) equals the single-process value. When ``index`` is given
    to :meth:`update`, rows are returned sorted by it and the duplicates that the distributed sampler adds to
    even out the ranks are dropped.

    Example::

        self.val_outputs = GatherAccumulator("scores", "targets")
        self.val_outputs.update(index=batch["index"], scores=logits.sigmoid(), targets=batch["labels"])
        values = self.val_outputs.compute(); self.val_outputs.reset()

    Args:
        *names: the tensors each :meth:`update` receives (first dimension = samples).
    """

    full_state_update = False

    def __init__(self, *names: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not names or len(set(names)) != len(names) or "index" in names:
            raise MedzooDataError("GatherAccumulator", f"names {names}", "distinct names other than 'index'")
        self.names = tuple(names)
        self._shapes: dict[str, torch.Size] = {}
        self.add_state("sample_index", default=[], dist_reduce_fx="cat")
        for name in self.names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor | None = None, **tensors: torch.Tensor) -> None:
        if set(tensors) != set(self.names):
            raise MedzooDataError(
                "GatherAccumulator.update", f"tensors {sorted(tensors)}", f"exactly {sorted(self.names)}"
            )
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1:
            raise MedzooDataError("GatherAccumulator.update", f"first dimensions {sizes}", "one batch size")
        (size,) = sizes
        if index is None:
            index = torch.full((size,), -1, dtype=torch.long)
        index = torch.as_tensor(index).reshape(-1).long().to(self.device)
        if len(index) != size:
            raise MedzooDataError("GatherAccumulator.update", f"{len(index)} indices", f"{size}")
        self.sample_index.append(index)
        for name, value in tensors.items():
            getattr(self, name).append(value.detach())

    def _wrap_compute(self, compute: Callable[..., Any]) -> Callable[..., Any]:
        # torchmetrics squeezes one-element results to 0-d; a one-sample split must keep its sample axis.
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(wrapped)
        def keep_shapes(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            values = wrapped(*args, **kwargs)
            return {
                name: value.reshape(self._shapes.get(name, value.shape)) for name, value in values.items()
            }

        return keep_shapes

    def compute(self) -> dict[str, torch.Tensor]:
        # Before a DDP sync the states are lists of batch tensors; after it, one concatenated tensor each.
        if isinstance(self.sample_index, list) and not self.sample_index:
            return {name: torch.empty(0) for name in self.names}
        index = dim_zero_cat(self.sample_index)
        values = {name: dim_zero_cat(getattr(self, name)) for name in self.names}
        if len(index) and bool((index >= 0).all()):
            order = torch.argsort(index, stable=True)
            ordered = index[order]
            keep = torch.ones_like(ordered, dtype=torch.bool)
            keep[1:] = ordered[1:] != ordered[:-1]
            rows = order[keep]
            values = {name: value[rows] for name, value in values.items()}
        self._shapes = {name: value.shape for name, value in values.items()}
        return values
