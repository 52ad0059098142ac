"""hfc-attack: Hierarchical Feature Constraint attacks and adversarial-example detectors (Yao et al.)."""

from __future__ import annotations

from typing import Any

from hfc_attack.attacks import ATTACKS, CWL2, IterativeAttack, build_attack
from hfc_attack.gmm import ClassConditionalGMMs, fit_class_gmms
from hfc_attack.models import MODEL_CONFIGS, FeatureExtractor, GaussianMixture, HFCLoss, NormalizedClassifier
from medzoo.models import build_model

__version__ = "0.2.1"

__all__ = [
    "ATTACKS",
    "CWL2",
    "MODEL_CONFIGS",
    "ClassConditionalGMMs",
    "FeatureExtractor",
    "GaussianMixture",
    "HFCLoss",
    "IterativeAttack",
    "NormalizedClassifier",
    "__version__",
    "build_attack",
    "create_model",
    "fit_class_gmms",
]


def create_model(name: str = "paper", **overrides: Any) -> NormalizedClassifier:
    """The classifier under attack, from ``MODEL_CONFIGS[name]`` with ``overrides``."""
    return build_model(MODEL_CONFIGS, NormalizedClassifier, name, **overrides)
