"""fewshot-augsearch: unsupervised augmentation search for few-shot medical segmentation (SSL-ALPNet)."""

from fewshot_augsearch.augment import AugmentationParams, augment, load_params, save_params, scale_params
from fewshot_augsearch.models import MODEL_CONFIGS, ALPNet, create_model
from fewshot_augsearch.search import SearchResult, search
from fewshot_augsearch.similarity import DISTANCES, SIMILARITIES

__version__ = "0.1.1"

__all__ = [
    "DISTANCES",
    "MODEL_CONFIGS",
    "SIMILARITIES",
    "ALPNet",
    "AugmentationParams",
    "SearchResult",
    "__version__",
    "augment",
    "create_model",
    "load_params",
    "save_params",
    "scale_params",
    "search",
]
