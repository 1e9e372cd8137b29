"""Empirical risk minimisation: plain mean cross-entropy, every sample weight 1."""
from __future__ import annotations

from .base import Method

__all__ = ["ERM"]


class ERM(Method):
    """The baseline.  With ``Trainer(clean_passes=k)`` it gets the same clean passes as a reweighting
    method (SPEC §6: comparisons must not confound reweighting with extra clean data)."""

    name = "erm"
    supports_distributed = True

    def loss(self, x, y, idx):
        return self.ctx.mean_ce(self.ctx.forward(x), y), None
