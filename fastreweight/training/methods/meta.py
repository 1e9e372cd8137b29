"""The one-step meta-reweighting direction (SPEC §3.5), exactly, without bi-level optimisation.

Per step: ``capture.linear_factors`` of the head (``layers="all"``: every ``nn.Linear``; or a list of
``nn.Linear`` modules) for the batch and for a clean mini-batch, ``meta_scores`` (each sample's
per-sample gradient against the mean clean gradient, for those layers), ``stateless_weights``."""
from __future__ import annotations

import torch
import torch.nn as nn

from ... import capture
from ...scores import meta_scores
from ...weights import stateless_weights, weighted_loss
from .base import WarmupMethod

__all__ = ["MetaDirection"]


class MetaDirection(WarmupMethod):
    name = "meta"

    def __init__(self, *, layers="head", warmup=0) -> None:
        super().__init__(warmup)
        if not (layers in ("head", "all") or (isinstance(layers, (list, tuple)) and layers
                                              and all(isinstance(m, nn.Linear) for m in layers))):
            raise ValueError(f"layers must be 'head', 'all' or a non-empty list of nn.Linear modules, got {layers!r}")
        self.layers = layers

    def options(self) -> dict:
        return dict(layers=self.layers if isinstance(self.layers, str) else f"{len(self.layers)} layers",
                    warmup=self.warmup.epochs)

    def attach(self, ctx) -> None:
        super().attach(ctx)
        if not isinstance(self.layers, str):  # the user's own list of nn.Linear modules
            self._layers = list(self.layers)
            return
        linear = [m for m in ctx.model.modules() if isinstance(m, nn.Linear)]
        if not linear:  # per-sample gradients are taken of nn.Linear layers only
            raise ValueError(f"MetaDirection(layers={self.layers!r}) needs a model with an nn.Linear layer (its last "
                             f"one is the head); {type(ctx.model).__name__} has none")
        self._layers = linear[-1:] if self.layers == "head" else linear

    def loss(self, x, y, idx):
        ctx = self.ctx
        if not self.active:
            return ctx.mean_ce(ctx.forward(x, ctx.model), y), torch.ones(len(y), device=ctx.device)
        A, D, _ = capture.linear_factors(ctx.model, self._layers, x, y)
        xc, yc = ctx.clean.sample(ctx.clean_batch_size)
        Ac, Dc, _ = capture.linear_factors(ctx.model, self._layers, xc, yc)
        r = meta_scores(A, D, Ac, Dc, check_values=ctx.check_values)
        w = stateless_weights(r, check_values=ctx.check_values)
        losses = ctx.per_sample_ce(ctx.forward(x, ctx.model), y)
        return weighted_loss(losses, w.to(losses.dtype), reduction="batch"), w
