"""fastreweight: feature-based reweighting (FBR) and meta-reweighting scores for noisy labels.

``fastreweight.weights`` holds the public API; ``fastreweight.capture`` gets features and gradient
factors from a model by hooks.  See SPEC.md (§ numbers in docstrings) for the definitions.
"""
import importlib as _importlib
import logging as _logging

from . import capture, scores, weights
from .backends import BackendUnavailable
from .clean_scorer import CleanScorer
from .scores import class_similarity, fbr_scores, last_plan, meta_scores
from .weights import Reweighter, stateless_weights, threshold_weights, weighted_loss

_logging.getLogger("fastreweight").addHandler(_logging.NullHandler())

#: subpackages and modules imported on first attribute access (``fastreweight.whiten.shrunk_class_means``
#: works after a bare ``import fastreweight``, without importing the trainer on every import)
_LAZY = ("whiten", "training", "label_issues", "data", "noise", "models", "presets")


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def clear_clean_cache() -> None:
    """Forget the clean-side quantities memoised across scoring calls (``problem.CleanCache``): needed
    only after writing into a clean tensor in a way its version counter does not see (through
    ``.data``, or a NumPy array sharing its memory)."""
    from .problem import clean_cache

    clean_cache.clear()


__version__ = "0.1.0"
__all__ = [
    "capture", "scores", "weights", "BackendUnavailable", "CleanScorer", "Reweighter", "class_similarity", "fbr_scores",
    "clear_clean_cache", "last_plan", "meta_scores", "stateless_weights", "threshold_weights", "weighted_loss",
]
