"""Experimental methods and policies: kept runnable and tested, not recommended, API may change.

* ``CoTeaching`` — two networks, each trained on the small-loss samples the other picks.
* ``RunningPrototypeFBR`` — FBR against running class means of the clean features (EMA).
* ``CleanMixLoader`` — the clean subset mixed into the training batches instead of clean passes.
"""
from .clean_mix import CleanMixLoader
from .coteaching import CoTeaching
from .running_prototypes import RunningPrototypeFBR

__all__ = ["CoTeaching", "RunningPrototypeFBR", "CleanMixLoader"]
