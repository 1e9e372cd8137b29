"""FBR against running class means of the clean features: the first step takes the class means of
all clean features, every later step moves them towards a clean mini-batch's
(``P ← momentum·P + (1 − momentum)·mean``, classes absent from the mini-batch unchanged) and scores
against the C rows (exact for the feature kernel, SPEC §4).  No host synchronisation per step: class
counts by ``index_add_``, masked updates by ``torch.where``; the list of present classes is read back
only until every class has been seen."""
from __future__ import annotations

import torch

from ..training.methods.fbr import FBR

__all__ = ["RunningPrototypeFBR"]


class RunningPrototypeFBR(FBR):
    CLEAN_FEATURES = ("prototype",)

    def __init__(self, *, momentum: float = 0.9, **fbr_options) -> None:
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        super().__init__(clean_features="prototype", **fbr_options)
        self.momentum = float(momentum)

    def options(self) -> dict:
        return {**super().options(), "momentum": self.momentum}

    def attach(self, ctx) -> None:
        if ctx.parallel.distributed:
            raise ValueError("RunningPrototypeFBR does not support Distributed()")
        super().attach(ctx)
        self.proto, self.seen, self.all_seen = None, None, None

    def _class_sums(self, Z, labels):
        C = self.ctx.num_classes
        S = torch.zeros(C, Z.shape[1], dtype=Z.dtype, device=Z.device).index_add_(0, labels, Z)
        cnt = torch.zeros(C, dtype=Z.dtype, device=Z.device).index_add_(0, labels, torch.ones_like(labels, dtype=Z.dtype))
        return S, cnt

    def clean_side(self):
        ctx, src = self.ctx, self._features
        if self.proto is None:
            S, cnt = self._class_sums(src.eval_features(ctx.clean.x, ctx.eval_batch_size), ctx.clean.y)
            self.proto = S / cnt.clamp_min(1)[:, None]
            self.seen = cnt > 0
        else:
            xb, yb = ctx.clean.sample(ctx.clean_batch_size)
            S, cnt = self._class_sums(src.eval_features(xb, ctx.eval_batch_size), yb)
            has = (cnt > 0)[:, None]
            P, m = self.proto, self.momentum
            P.copy_(torch.where(has, m * P + (1 - m) * (S / cnt.clamp_min(1)[:, None]), P))
            self.seen |= has[:, 0]
        if self.all_seen is None:
            present = self.seen.nonzero().flatten()
            if len(present) < ctx.num_classes:
                return self.proto[present], present
            self.all_seen = torch.arange(ctx.num_classes, device=ctx.device)
        return self.proto, self.all_seen

    def state_dict(self) -> dict:
        return {**super().state_dict(), "proto": self.proto, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.proto, self.seen = state["proto"], state["seen"]
        if self.seen is not None and bool(self.seen.all()):
            self.all_seen = torch.arange(self.ctx.num_classes, device=self.ctx.device)
