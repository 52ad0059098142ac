"""Adversarial-example detectors on pooled ReLU features: KD, LID, Mahalanobis, SVM, DNN, BU, KD+BU.

Every detector has ``fit(clean, adversarial)`` and ``score(inputs) -> (N,)`` (higher = more adversarial),
and ``state() / from_state()`` as plain numpy arrays so that ``save_detectors`` writes one npz (no pickle).
Inputs are :class:`DetectorInputs`: ``{layer: (N, D_l)}`` features, the predicted class (N,), and the
MC-dropout uncertainty (N,) that BU needs. Detectors that combine per-layer scores (KD/LID/Mahalanobis over
several layers, KD+BU) fit a StandardScaler + LogisticRegression on clean (0) vs adversarial (1) training
inputs, as in the papers the HFC authors attack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from medzoo.errors import MedzooDataError
from medzoo.io import atomic_write

__all__ = [
    "DETECTORS",
    "BUDetector",
    "DNNDetector",
    "DetectorInputs",
    "KDBUDetector",
    "LayerFusionDetector",
    "SVMDetector",
    "kernel_density_scores",
    "lid_scores",
    "load_detectors",
    "mahalanobis_scores",
    "save_detectors",
]


@dataclass
class DetectorInputs:
    """What detectors read for N images.

    Attributes:
        features: ``{layer: (N, D_l)}`` pooled ReLU features.
        pred: (N,) predicted class.
        uncertainty: (N,) MC-dropout uncertainty (BU), or None when not computed.
        preprocessed: ``{layer: (N, D_l)}`` features of the Mahalanobis-preprocessed inputs (each layer
            after its own input step; see ``hfc_attack.pipeline.mahalanobis_preprocess``), or None.
    """

    features: dict[str, np.ndarray]
    pred: np.ndarray
    uncertainty: np.ndarray | None = None
    preprocessed: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.pred)


# ---- per-layer raw scores -------------------------------------------------------------------------------


def _median_distance(x: np.ndarray) -> float:
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    positive = d[np.triu_indices(len(x), 1)]
    positive = positive[positive > 0]
    return float(np.median(positive)) if positive.size else 1.0


def kernel_density_scores(
    train: np.ndarray,
    train_labels: np.ndarray,
    bandwidths: Mapping[int, float],
    x: np.ndarray,
    pred: np.ndarray,
) -> np.ndarray:
    """(N,) ``-log KDE_{pred}(x)``: Gaussian kernel density of each row under the clean features of its
    predicted class (scikit-learn's ``KernelDensity(kernel="gaussian")``); higher = more adversarial."""
    out = np.empty(len(x))
    for cls in np.unique(pred):
        ref = train[train_labels == cls]
        if len(ref) == 0:
            raise MedzooDataError(
                "KD", f"no clean training features of class {cls}", "features of every class"
            )
        h = bandwidths[int(cls)]
        rows = pred == cls
        d2 = ((x[rows][:, None] - ref[None]) ** 2).sum(-1)
        dim = x.shape[1]
        log_density = (
            logsumexp(-0.5 * d2 / h**2, axis=1) - np.log(len(ref)) - 0.5 * dim * np.log(2 * np.pi * h**2)
        )
        out[rows] = -log_density
    return out


def lid_scores(reference: np.ndarray, x: np.ndarray, k: int = 20) -> np.ndarray:
    """(N,) maximum-likelihood local intrinsic dimensionality of each row of ``x`` against ``reference``.

    ``LID(x) = -(1/k sum_i log(d_i / d_k))^-1`` over the k nearest reference points (Ma et al. 2018); a point
    identical to ``x`` (x itself, when ``x`` is part of the reference) is skipped.
    """
    d = np.sqrt(np.maximum(((x[:, None] - reference[None]) ** 2).sum(-1), 0.0))
    d = np.where(d <= 1e-12, np.inf, d)
    k = min(k, reference.shape[0] - 1)
    nearest = np.sort(d, axis=1)[:, :k]
    ratio = np.log(nearest / nearest[:, -1:] + 1e-12)
    return -1.0 / np.minimum(ratio.mean(axis=1), -1e-12)


def mahalanobis_scores(means: np.ndarray, precision: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N,) ``min_c (x - mu_c)^T P (x - mu_c)`` with class means (K, D) and shared precision (D, D)."""
    diff = x[:, None] - means[None]  # (N, K, D)
    return np.einsum("nkd,de,nke->nk", diff, precision, diff).min(axis=1)


def class_means_and_precision(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, D) and the pseudo-inverse of the shared (tied) covariance (D, D) (Lee et al. 2018)."""
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    return means, np.linalg.pinv(centred.T @ centred / len(x))


class _LogisticHead:
    """StandardScaler + LogisticRegression fitted on clean (0) vs adversarial (1) rows, stored as arrays."""

    def __init__(self) -> None:
        self.mean = self.scale = self.coef = self.intercept = None

    def fit(self, clean: np.ndarray, adversarial: np.ndarray) -> _LogisticHead:
        x = np.concatenate([clean, adversarial])
        y = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
        scaler = StandardScaler().fit(x)
        lr = LogisticRegression(max_iter=1000).fit(scaler.transform(x), y)
        self.mean, self.scale = scaler.mean_, scaler.scale_
        self.coef, self.intercept = lr.coef_[0], lr.intercept_
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept[0]

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in ("mean", "scale", "coef", "intercept")}

    def load(self, state: Mapping[str, np.ndarray], prefix: str) -> _LogisticHead:
        for k in ("mean", "scale", "coef", "intercept"):
            setattr(self, k, np.asarray(state[f"{prefix}{k}"]))
        return self


# ---- detectors ------------------------------------------------------------------------------------------


@dataclass
class LayerFusionDetector:
    """KD, LID or Mahalanobis on every chosen layer, fused by logistic regression (clean vs adversarial).

    Args:
        kind: ``"kd"`` (Feinman et al.), ``"lid"`` (Ma et al., k nearest), ``"mahalanobis"`` (Lee et al.).
        layers: layer names to use (default at fit: every layer of the inputs; KD's default is the last).
        k: LID's neighbours (the paper: 20).
        noise: Mahalanobis input pre-processing magnitude (the paper: 0.0005; 0 = none). The scores then
            read ``inputs.preprocessed``, which the caller computes with the fitted statistics.
        max_reference: LID/KD keep at most this many clean training rows as reference (seeded choice).
        seed: the choice of reference rows.
    """

    kind: str
    layers: list[str] | None = None
    k: int = 20
    noise: float = 0.0
    max_reference: int = 2000
    seed: int = 0
    params: dict[str, np.ndarray] = field(default_factory=dict)
    head: _LogisticHead = field(default_factory=_LogisticHead)

    def __post_init__(self) -> None:
        if self.kind not in ("kd", "lid", "mahalanobis"):
            raise MedzooDataError("detector kind", repr(self.kind), "kd, lid or mahalanobis")

    def _fit_layers(self, clean: DetectorInputs, labels: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        for i, layer in enumerate(self.layers):
            x = clean.features[layer].astype(np.float64)
            if self.kind == "mahalanobis":
                self.params[f"{i}.means"], self.params[f"{i}.precision"] = class_means_and_precision(
                    x, labels
                )
                continue
            keep = np.sort(rng.permutation(len(x))[: self.max_reference])
            self.params[f"{i}.reference"], self.params[f"{i}.labels"] = x[keep], labels[keep]
            if self.kind == "kd":
                classes = np.unique(labels[keep])
                self.params[f"{i}.classes"] = classes
                self.params[f"{i}.bandwidths"] = np.array(
                    [_median_distance(x[keep][labels[keep] == c]) for c in classes]
                )

    def layer_scores(self, inputs: DetectorInputs) -> np.ndarray:
        """(N, L) raw per-layer scores (higher = more adversarial)."""
        columns = []
        for i, layer in enumerate(self.layers):
            x = inputs.features[layer].astype(np.float64)
            if self.kind == "mahalanobis":
                if self.noise > 0:
                    if inputs.preprocessed is None or layer not in inputs.preprocessed:
                        raise MedzooDataError(
                            "Mahalanobis detector", "inputs without pre-processed features",
                            f"pipeline.mahalanobis_preprocess with noise {self.noise}",
                        )  # fmt: skip
                    x = inputs.preprocessed[layer].astype(np.float64)
                columns.append(
                    mahalanobis_scores(self.params[f"{i}.means"], self.params[f"{i}.precision"], x)
                )
            elif self.kind == "lid":
                columns.append(lid_scores(self.params[f"{i}.reference"], x, self.k))
            else:
                bandwidths = dict(
                    zip(self.params[f"{i}.classes"].tolist(), self.params[f"{i}.bandwidths"], strict=True)
                )
                columns.append(
                    kernel_density_scores(
                        self.params[f"{i}.reference"], self.params[f"{i}.labels"], bandwidths, x, inputs.pred
                    )
                )
        return np.stack(columns, axis=1)

    def fit_statistics(self, clean: DetectorInputs, labels: np.ndarray) -> LayerFusionDetector:
        """Fit the per-layer statistics (class means, references, bandwidths) on clean features."""
        if self.layers is None:
            names = list(clean.features)
            self.layers = names[-1:] if self.kind == "kd" else names
        self._fit_layers(clean, np.asarray(labels))
        return self

    def fit_head(self, clean: DetectorInputs, adversarial: DetectorInputs) -> LayerFusionDetector:
        """Fit the logistic-regression fusion of the per-layer scores, clean (0) vs adversarial (1)."""
        self.head.fit(self.layer_scores(clean), self.layer_scores(adversarial))
        return self

    def fit(
        self, clean: DetectorInputs, adversarial: DetectorInputs, labels: np.ndarray
    ) -> LayerFusionDetector:
        """``fit_statistics`` on clean features (true ``labels``), then ``fit_head`` on clean vs adv."""
        return self.fit_statistics(clean, labels).fit_head(clean, adversarial)

    def score(self, inputs: DetectorInputs) -> np.ndarray:
        return self.head(self.layer_scores(inputs))

    def state(self) -> dict[str, np.ndarray]:
        meta = {"kind": self.kind, "layers": self.layers, "k": self.k, "noise": self.noise}
        return {"meta": _encode(meta), **self.params, **self.head.state("head.")}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> LayerFusionDetector:
        meta = _decode(state["meta"])
        params = {k: np.asarray(v) for k, v in state.items() if k != "meta" and not k.startswith("head.")}
        head = _LogisticHead().load(state, "head.")
        return cls(meta["kind"], meta["layers"], meta["k"], meta.get("noise", 0.0), params=params, head=head)


@dataclass
class SVMDetector:
    """RBF-kernel SVM on the standardised features of one layer (default: the last), clean vs adversarial."""

    layer: str | None = None
    C: float = 1.0
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def fit(self, clean: DetectorInputs, adversarial: DetectorInputs, labels: np.ndarray) -> SVMDetector:
        self.layer = self.layer or list(clean.features)[-1]
        x = np.concatenate([clean.features[self.layer], adversarial.features[self.layer]]).astype(np.float64)
        y = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
        scaler = StandardScaler().fit(x)
        svm = SVC(kernel="rbf", C=self.C, gamma="scale").fit(scaler.transform(x), y)
        self.params = {
            "mean": scaler.mean_,
            "scale": scaler.scale_,
            "support": svm.support_vectors_,
            "dual": svm.dual_coef_[0],
            "intercept": svm.intercept_,
            "gamma": np.array([svm._gamma]),
        }
        return self

    def score(self, inputs: DetectorInputs) -> np.ndarray:
        """The SVM's decision function ``sum_i a_i exp(-gamma |x - s_i|^2) + b`` (computed from arrays)."""
        p = self.params
        x = (inputs.features[self.layer].astype(np.float64) - p["mean"]) / p["scale"]
        d2 = ((x[:, None] - p["support"][None]) ** 2).sum(-1)
        return np.exp(-p["gamma"][0] * d2) @ p["dual"] + p["intercept"][0]

    def state(self) -> dict[str, np.ndarray]:
        return {"meta": _encode({"layer": self.layer, "C": self.C}), **self.params}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> SVMDetector:
        meta = _decode(state["meta"])
        return cls(meta["layer"], meta["C"], {k: np.asarray(v) for k, v in state.items() if k != "meta"})


@dataclass
class DNNDetector:
    """A small MLP (D -> hidden -> hidden -> 1) on one layer's standardised pooled features, clean vs adv.

    Metzen et al. attach a small conv net to a feature map; on pooled features the conv layers reduce to
    this MLP (see the README's deviations).
    """

    layer: str | None = None
    hidden: int = 64
    epochs: int = 300
    lr: float = 1e-2
    seed: int = 0
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def _net(self, dim: int) -> torch.nn.Sequential:
        return torch.nn.Sequential(
            torch.nn.Linear(dim, self.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, self.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, 1),
        )

    def fit(self, clean: DetectorInputs, adversarial: DetectorInputs, labels: np.ndarray) -> DNNDetector:
        self.layer = self.layer or list(clean.features)[-1]
        x = np.concatenate([clean.features[self.layer], adversarial.features[self.layer]]).astype(np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-8
        torch.manual_seed(self.seed)
        net = self._net(x.shape[1])
        xt = torch.tensor((x - mean) / scale, dtype=torch.float32)
        yt = torch.tensor(np.r_[np.zeros(len(clean)), np.ones(len(adversarial))], dtype=torch.float32)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=1e-4)
        for _ in range(self.epochs):  # full batch: the detector sets are small
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(net(xt)[:, 0], yt).backward()
            optimizer.step()
        self.params = {
            "mean": mean,
            "scale": scale,
            **{k: v.detach().numpy() for k, v in net.state_dict().items()},
        }
        return self

    def score(self, inputs: DetectorInputs) -> np.ndarray:
        p = self.params
        net = self._net(len(p["mean"]))
        net.load_state_dict({k: torch.as_tensor(v) for k, v in p.items() if k not in ("mean", "scale")})
        x = (inputs.features[self.layer].astype(np.float64) - p["mean"]) / p["scale"]
        with torch.no_grad():
            return net(torch.tensor(x, dtype=torch.float32))[:, 0].double().numpy()

    def state(self) -> dict[str, np.ndarray]:
        meta = {"layer": self.layer, "hidden": self.hidden}
        return {"meta": _encode(meta), **self.params}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> DNNDetector:
        meta = _decode(state["meta"])
        params = {k: np.asarray(v) for k, v in state.items() if k != "meta"}
        return cls(meta["layer"], meta["hidden"], params=params)


@dataclass
class BUDetector:
    """Bayesian uncertainty (Feinman et al.): the MC-dropout uncertainty itself; nothing to fit."""

    def fit(self, clean: DetectorInputs, adversarial: DetectorInputs, labels: np.ndarray) -> BUDetector:
        return self

    def score(self, inputs: DetectorInputs) -> np.ndarray:
        if inputs.uncertainty is None:
            raise MedzooDataError("BU detector", "inputs without MC-dropout uncertainty", "bu_samples > 0")
        return np.asarray(inputs.uncertainty, dtype=np.float64)

    def state(self) -> dict[str, np.ndarray]:
        return {"meta": _encode({})}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> BUDetector:
        return cls()


@dataclass
class KDBUDetector:
    """KD (last layer) and BU combined by logistic regression (Feinman et al.)."""

    kd: LayerFusionDetector = field(default_factory=lambda: LayerFusionDetector("kd"))
    head: _LogisticHead = field(default_factory=_LogisticHead)

    def _pair(self, inputs: DetectorInputs) -> np.ndarray:
        return np.stack([self.kd.layer_scores(inputs)[:, -1], BUDetector().score(inputs)], axis=1)

    def fit(self, clean: DetectorInputs, adversarial: DetectorInputs, labels: np.ndarray) -> KDBUDetector:
        self.kd.fit(clean, adversarial, labels)
        self.head.fit(self._pair(clean), self._pair(adversarial))
        return self

    def score(self, inputs: DetectorInputs) -> np.ndarray:
        return self.head(self._pair(inputs))

    def state(self) -> dict[str, np.ndarray]:
        return {**{f"kd.{k}": v for k, v in self.kd.state().items()}, **self.head.state("head.")}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> KDBUDetector:
        kd = LayerFusionDetector.from_state({k[3:]: v for k, v in state.items() if k.startswith("kd.")})
        return cls(kd, _LogisticHead().load(state, "head."))


# name -> factory; `hfc-attack fit-detectors --detectors kd,lid` picks from these.
DETECTORS = {
    "kd": lambda: LayerFusionDetector("kd"),
    "lid": lambda: LayerFusionDetector("lid"),
    "mahalanobis": lambda: LayerFusionDetector("mahalanobis", noise=0.0005),
    "svm": SVMDetector,
    "dnn": DNNDetector,
    "bu": BUDetector,
    "kd_bu": KDBUDetector,
}
_CLASSES = {
    "kd": LayerFusionDetector,
    "lid": LayerFusionDetector,
    "mahalanobis": LayerFusionDetector,
    "svm": SVMDetector,
    "dnn": DNNDetector,
    "bu": BUDetector,
    "kd_bu": KDBUDetector,
}


def _encode(obj: object) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _decode(array: np.ndarray) -> dict:
    return json.loads(bytes(np.asarray(array, dtype=np.uint8)).decode())


def save_detectors(path: str | os.PathLike, detectors: Mapping[str, object]) -> Path:
    """Write fitted detectors ``{name: detector}`` (names from :data:`DETECTORS`) into one npz, atomically."""
    arrays = {"names": _encode(list(detectors))}
    for name, detector in detectors.items():
        arrays.update({f"{name}/{k}": np.asarray(v) for k, v in detector.state().items()})
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


def load_detectors(path: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, object]:
    """Read detectors written by :func:`save_detectors` (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise MedzooDataError(path, "no such file", "a detectors npz written by `hfc-attack fit-detectors`")
    with np.load(path, allow_pickle=False) as data:
        stored = _decode(data["names"])
        out = {}
        for name in names or stored:
            if name not in stored:
                raise MedzooDataError(path, f"detectors {stored}", f"a fitted {name!r} detector")
            state = {k[len(name) + 1 :]: data[k] for k in data.files if k.startswith(f"{name}/")}
            out[name] = _CLASSES[name].from_state(state)
    return out
