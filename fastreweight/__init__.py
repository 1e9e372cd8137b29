"""fastreweight: feature-based reweighting (FBR) and meta-reweighting scores for noisy labels.

``fastreweight.weights`` holds the public API; ``fastreweight.capture`` gets features and gradient
factors from a model by hooks.  See SPEC.md (§ numbers in docstrings) for the definitions.
"""
import logging as _logging

from . import capture, scores, weights
from .backends import BackendUnavailable
from .clean_scorer import CleanScorer
from .scores import class_similarity, fbr_scores, last_plan, meta_scores
from .weights import Reweighter, stateless_weights, threshold_weights, weighted_loss

_logging.getLogger("fastreweight").addHandler(_logging.NullHandler())

__version__ = "0.1.0"
__all__ = [
    "capture", "scores", "weights", "BackendUnavailable", "CleanScorer", "Reweighter", "class_similarity", "fbr_scores",
    "last_plan", "meta_scores", "stateless_weights", "threshold_weights", "weighted_loss",
]
