"""Per-class, per-layer Bayesian Gaussian mixtures of clean features (scikit-learn), saved as npz."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.mixture import BayesianGaussianMixture

from hfc_attack.models.hfc import GaussianMixture, HFCLoss
from medzoo.errors import MedzooDataError
from medzoo.io import atomic_write

__all__ = ["ClassConditionalGMMs", "fit_class_gmms"]

_FIELDS = ("weights", "means", "precisions_cholesky")


class ClassConditionalGMMs:
    """``{layer: {class: (weights (K,), means (K, D), precisions_cholesky (K, D, D))}}`` as numpy arrays.

    Build with :func:`fit_class_gmms`, write with :meth:`save` (a plain ``.npz``, read back with
    ``allow_pickle=False``), turn into the attack's loss with :meth:`hfc_loss`.
    """

    def __init__(self, params: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> None:
        self.params = {layer: {int(c): dict(p) for c, p in per.items()} for layer, per in params.items()}

    @property
    def layers(self) -> list[str]:
        return list(self.params)

    def save(self, path: str | os.PathLike) -> Path:
        """Write every array plus a JSON index of layers and classes into one npz, atomically."""
        arrays: dict[str, np.ndarray] = {}
        index = {layer: sorted(per) for layer, per in self.params.items()}
        for li, (_layer, per) in enumerate(self.params.items()):
            for cls, p in per.items():
                for field in _FIELDS:
                    arrays[f"l{li}_c{cls}_{field}"] = np.asarray(p[field], dtype=np.float64)
        arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassConditionalGMMs:
        """Read a file written by :meth:`save` (no pickle)."""
        path = Path(path)
        if not path.is_file():
            raise MedzooDataError(path, "no such file", "a GMM npz written by `hfc-attack fit-gmm`")
        try:
            with np.load(path, allow_pickle=False) as data:
                index = json.loads(bytes(data["index"]).decode())
                params = {
                    layer: {
                        int(c): {field: data[f"l{li}_c{c}_{field}"] for field in _FIELDS} for c in classes
                    }
                    for li, (layer, classes) in enumerate(index.items())
                }
        except (KeyError, ValueError, OSError) as error:
            raise MedzooDataError(
                path, f"an unreadable GMM file ({error})", "a GMM npz of `fit-gmm`"
            ) from error
        return cls(params)

    def hfc_loss(self, layers: list[str] | None = None) -> HFCLoss:
        """The :class:`HFCLoss` over ``layers`` (default: all stored layers)."""
        import torch

        chosen = self.layers if layers is None else layers
        unknown = [layer for layer in chosen if layer not in self.params]
        if unknown:
            raise MedzooDataError("hfc layers", f"{unknown}", f"layers among {self.layers}")
        return HFCLoss(
            {
                layer: {
                    c: GaussianMixture(*(torch.as_tensor(p[f], dtype=torch.float32) for f in _FIELDS))
                    for c, p in self.params[layer].items()
                }
                for layer in chosen
            }
        )


def fit_class_gmms(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    n_components: int = 64,
    n_init: int = 2,
    max_iter: int = 1000,
    reg_covar: float = 1e-6,
    seed: int = 0,
) -> ClassConditionalGMMs:
    """Fit one ``BayesianGaussianMixture`` (full covariance) per layer and class on clean features.

    Args:
        features: ``{layer: (N, D_l)}`` pooled clean features (e.g. of correctly classified training images).
        labels: (N,) integer class of each row.
        n_components: K; capped at the number of samples of a class (a mixture cannot have more components
            than points).
        n_init, max_iter, reg_covar: scikit-learn settings (the reference's: n_init 2, max_iter 1000).
        seed: random_state of every fit.
    """
    labels = np.asarray(labels)
    params: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for layer, values in features.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] != labels.shape[0]:
            raise MedzooDataError(
                f"features[{layer!r}]", f"{values.shape[0]} rows", f"{labels.shape[0]} rows"
            )
        params[layer] = {}
        for cls in np.unique(labels):
            rows = values[labels == cls]
            if rows.shape[0] < 2:
                raise MedzooDataError(
                    f"class {cls}", f"{rows.shape[0]} clean sample(s)", "at least 2 to fit a mixture"
                )
            gmm = BayesianGaussianMixture(
                n_components=min(n_components, rows.shape[0]),
                covariance_type="full",
                n_init=n_init,
                max_iter=max_iter,
                reg_covar=reg_covar,
                random_state=seed,
            ).fit(rows)
            params[layer][int(cls)] = {
                "weights": gmm.weights_,
                "means": gmm.means_,
                "precisions_cholesky": gmm.precisions_cholesky_,
            }
    return ClassConditionalGMMs(params)
