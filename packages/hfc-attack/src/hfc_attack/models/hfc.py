"""The Hierarchical Feature Constraint (HFC) loss: pull every layer's feature toward one Gaussian component
of the target class's mixture (Yao et al., MICCAI 2021, Eq. 4-5)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from medzoo.errors import MedzooDataError

__all__ = ["GaussianMixture", "HFCLoss", "gmm_component_scores"]


class GaussianMixture(nn.Module):
    """One fitted Gaussian mixture with full covariances, stored as in scikit-learn.

    Args:
        weights: (K,) mixing proportions pi_k.
        means: (K, D) component means mu_k.
        precisions_cholesky: (K, D, D) lower-triangular L_k with precision_k = L_k L_k^T (scikit-learn's
            ``precisions_cholesky_``).
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, precisions_cholesky: torch.Tensor) -> None:
        super().__init__()
        k, d = means.shape
        if weights.shape != (k,) or precisions_cholesky.shape != (k, d, d):
            raise ValueError(
                f"GaussianMixture: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                f"precisions_cholesky {tuple(precisions_cholesky.shape)}; expected (K,), (K, D), (K, D, D)"
            )
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float32))
        self.register_buffer("precisions_cholesky", torch.as_tensor(precisions_cholesky, dtype=torch.float32))

    def whitened(self, f: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K, D): ``(f - mu_k)^T L_k`` for every component."""
        diff = f[:, None, :] - self.means[None]  # (B, K, D)
        return torch.einsum("bkd,kde->bke", diff, self.precisions_cholesky)

    def component_scores(self, f: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K): ``-1/2 ||(f - mu_k) L_k||^2 + sum log diag(L_k) + log pi_k`` (no constant)."""
        log_det = torch.log(torch.diagonal(self.precisions_cholesky, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        return -0.5 * self.whitened(f).pow(2).sum(-1) + log_det + torch.log(self.weights)

    def log_prob(self, f: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,): the mixture's log density (scikit-learn's ``score_samples``)."""
        d = f.shape[1]
        constant = -0.5 * d * torch.log(torch.tensor(2 * torch.pi, device=f.device, dtype=f.dtype))
        return torch.logsumexp(self.component_scores(f), dim=1) + constant


def gmm_component_scores(gmm: GaussianMixture, f: torch.Tensor) -> torch.Tensor:
    """Functional alias of :meth:`GaussianMixture.component_scores`: (B, D) -> (B, K)."""
    return gmm.component_scores(f)


class HFCLoss(nn.Module):
    """The HFC term: sum over layers of the whitened squared distance to the target class's best component.

    For a feature f of layer l and target class t, with t's mixture on that layer (Eq. 5):
    ``k* = argmax_k [-1/2 ||(f - mu_k) L_k||^2 + sum log diag L_k + log pi_k]`` (chosen without gradient),
    ``hfc_l = mean_d (((f - mu_k*)^T L_k*)_d)^2``. The loss is ``sum_l mean_batch hfc_l``; an attack adds
    ``lambda * HFC`` to its classification loss (``lambda`` is the attack's ``hfc_weight``).

    Args:
        mixtures: ``{layer name: {class index: GaussianMixture}}``; the layers must be among the features the
            attack's :class:`~hfc_attack.models.FeatureExtractor` returns.
    """

    def __init__(self, mixtures: Mapping[str, Mapping[int, GaussianMixture]]) -> None:
        super().__init__()
        if not mixtures:
            raise ValueError("HFCLoss needs at least one layer of mixtures")
        self.layer_names = list(mixtures)
        # ModuleDict keys may not contain '.', which layer names do.
        self.mixtures = nn.ModuleDict(
            {
                self._key(layer): nn.ModuleDict({str(c): g for c, g in per_class.items()})
                for layer, per_class in mixtures.items()
            }
        )

    @staticmethod
    def _key(layer: str) -> str:
        return layer.replace(".", "__")

    def mixture(self, layer: str, cls: int) -> GaussianMixture:
        """The mixture of ``layer`` for class ``cls``."""
        per_class = self.mixtures[self._key(layer)]
        if str(cls) not in per_class:
            raise MedzooDataError(
                f"class mixtures of layer {layer!r}",
                f"mixtures for classes {list(per_class)} only",
                f"a mixture for class {cls}: fit-gmm saw no correctly classified training image of it "
                "(train the classifier longer, or attack towards a class that has one)",
            )
        return per_class[str(cls)]

    def layer_terms(
        self, features: Mapping[str, torch.Tensor], target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """{layer: (B,) hfc_l per sample} for features {layer: (B, D_l)} and target classes (B,)."""
        terms = {}
        for layer in self.layer_names:
            if layer not in features:
                raise KeyError(f"HFCLoss: layer {layer!r} missing from the features ({list(features)})")
            f = features[layer]
            out = f.new_zeros(f.shape[0])
            for cls in target.unique().tolist():
                rows = target == cls
                gmm = self.mixture(layer, int(cls))
                with torch.no_grad():
                    best = gmm.component_scores(f[rows]).argmax(dim=1)  # (b,) k*
                diff = f[rows] - gmm.means[best]  # (b, D)
                whitened = torch.einsum("bd,bde->be", diff, gmm.precisions_cholesky[best])
                out = out.index_put((rows.nonzero(as_tuple=True)[0],), whitened.pow(2).mean(-1))
            terms[layer] = out
        return terms

    def forward(self, features: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Scalar: ``sum_l mean_b hfc_l``."""
        return torch.stack([t.mean() for t in self.layer_terms(features, target).values()]).sum()

    def log_likelihood(
        self, features: Mapping[str, torch.Tensor], classes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """{layer: (B,)} log density of each feature under the mixture of its class in ``classes``."""
        out = {}
        for layer in self.layer_names:
            f = features[layer]
            values = f.new_empty(f.shape[0])
            for cls in classes.unique().tolist():
                rows = classes == cls
                values[rows] = self.mixture(layer, int(cls)).log_prob(f[rows])
            out[layer] = values
        return out
