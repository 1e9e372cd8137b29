"""Training methods as objects that own and check their options (SPEC §6: same data, model, budget).

========================  =====================================================================
``ERM()``                 plain cross-entropy
``FBR(...)``              stateful feature-based reweighting, the library's method
``FBRPaper(...)``         FBR as published (SPEC §7), the reference for every variant
``MetaDirection(...)``    the exact one-step meta-reweighting direction (SPEC §3.5)
``L2R(...)``              bi-level Learning to Reweight (Ren et al. 2018)
``NeighbourRelabel(...)`` relabel confident flips by neighbour agreement, down-weight doubtful rows
========================  =====================================================================

``make_method(name, **options)`` builds one by name (``"erm"``, ``"fbr"``, ``"fbr-paper"``,
``"meta"``, ``"l2r"``, ``"relabel"``; ``"coteaching"`` from ``fastreweight.experimental``).
"""
from __future__ import annotations

from .base import Method, RunContext
from .erm import ERM
from .fbr import FBR
from .fbr_paper import FBRPaper
from .l2r import L2R
from .meta import MetaDirection
from .relabel import NeighbourRelabel

__all__ = ["Method", "RunContext", "ERM", "FBR", "FBRPaper", "MetaDirection", "L2R", "NeighbourRelabel", "METHODS", "make_method"]

METHODS: dict[str, type] = {"erm": ERM, "fbr": FBR, "fbr-paper": FBRPaper, "meta": MetaDirection, "l2r": L2R, "relabel": NeighbourRelabel}


def make_method(name: str, **options) -> Method:
    """The method registered as ``name`` with ``options`` (its constructor's keywords)."""
    if name == "coteaching":
        from ...experimental.coteaching import CoTeaching

        return CoTeaching(**options)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join([*METHODS, 'coteaching'])}")
    cls = METHODS[name]
    try:
        return cls(**options)
    except TypeError as e:  # an option the method does not have
        raise TypeError(f"{cls.__name__}: {e}") from None
