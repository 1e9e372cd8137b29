"""FBR as its authors run it (SPEC §7, ``recipe="paper"``): the reference every variant is judged by.

Per epoch, after the loop's clean passes (the recipe: ``Trainer(clean_passes=30, clean_batch_size=128)``,
mean cross-entropy, the same optimiser): if reweighting (epoch >= ``warmup``; the authors'
``skip_epochs=10`` with their ``epoch > skip_epochs`` is ``warmup=11``), the clean features once (eval
mode, no_grad).  Each training batch then gets an eval-mode no_grad forward for its penultimate
features (``batch_features="eval"``), ``fbr_scores(center="clean", shift="second",
alpha=1/(C−1) if epoch < alpha_epochs else 0)``, ``threshold_weights``, stored per sample (initial
value 0.5, so the loss of the warm-up epochs is 0.5·mean CE), and the loss
``weighted_loss(reduction="batch")``.  ``whiten`` is not part of the recipe (off by default): it
whitens the epoch's clean features as ``FBR(whiten=...)`` does, with the recipe's shift and that
epoch's ``alpha``.
"""
from __future__ import annotations

import warnings

import torch

from ... import capture
from ...weights import threshold_weights, weighted_loss
from ... import validate as V
from ..features import FeatureSource
from .base import WarmupMethod
from .fbr import CachedScorer, WhitenedCleanSide, check_whiten_option, check_whitened_state, with_trusted_rows

__all__ = ["FBRPaper"]


def _warn_missing_classes(clean_y: torch.Tensor, num_classes: int) -> None:
    """Warn once per run when some class has no clean row: its training samples score as "skip"
    (``on_missing_class="skip"``), which ``threshold_weights`` turns into weight 0 for all of them."""
    present = torch.zeros(num_classes, dtype=torch.bool, device=clean_y.device)
    present[clean_y] = True
    missing = (~present).nonzero().flatten().tolist()
    if missing:
        warnings.warn(f"FBRPaper: the clean subset has no row of class(es) {missing}; once reweighting starts every "
                      "training sample labelled with one of them gets weight 0 (give the clean subset at least one "
                      "row per class)", UserWarning, stacklevel=4)


class FBRPaper(WarmupMethod):
    """SPEC §7 step by step (see the module doc)."""

    name = "fbr-paper"

    def __init__(self, *, warmup=11, alpha_epochs: int = 40, batch_features: str = "eval", whiten=None,
                 whiten_every: int = 1) -> None:
        super().__init__(warmup)
        V.check_option("batch_features", batch_features, ("train", "eval"))
        if isinstance(alpha_epochs, bool) or not isinstance(alpha_epochs, int):
            raise ValueError(f"alpha_epochs must be an int, got {alpha_epochs!r}")
        self.alpha_epochs, self.batch_features = alpha_epochs, batch_features
        self.whiten, self.whiten_every = check_whiten_option(whiten, whiten_every)

    def options(self) -> dict:
        return dict(warmup=self.warmup.epochs, alpha_epochs=self.alpha_epochs, batch_features=self.batch_features,
                    whiten=self.whiten, whiten_every=self.whiten_every)

    def attach(self, ctx) -> None:
        super().attach(ctx)
        self.weights = torch.full((ctx.num_samples,), 0.5, dtype=ctx.weight_dtype, device=ctx.device)
        self._features = FeatureSource(ctx.model, from_training_forward=self.batch_features == "train",
                                       distributed=False)
        self.scorer = CachedScorer(ctx.num_classes, ctx.check_values)
        self.whitened = WhitenedCleanSide(self.whiten, self.whiten_every) if self.whiten is not None else None
        self.cache = None
        _warn_missing_classes(ctx.clean.y, ctx.num_classes)

    def feature_source(self):
        return self._features

    def _alpha(self, epoch: int) -> float:
        return 1.0 / (self.ctx.num_classes - 1) if epoch < self.alpha_epochs else 0.0

    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        self.alpha = self._alpha(epoch)
        if self.active:  # this epoch's clean features, once
            ctx = self.ctx
            Z, u = self._features.eval_features(ctx.clean.x, ctx.eval_batch_size), ctx.clean.y
            if self.whitened is not None:  # C rows standing for the whitened clean side
                Z, u = self.whitened(Z, u, ctx.num_classes, "second", self.alpha, ctx.check_values)
            self.cache = (Z, u)
            self.scorer.stale = True  # the scorer takes them on first use

    def _batch_features(self, x, rows):
        ctx = self.ctx
        if self.batch_features == "train":
            return self._features.train_forward(ctx.model, x, rows, ctx.precision)
        model = ctx.model
        model.eval()
        with torch.no_grad(), ctx.precision.autocast():
            src = self._features
            feats = (src.split_eval(x[:rows])[0] if src.split_eval is not None
                     else capture.penultimate(model, x[:rows], head=src.head)[0])
        model.train()
        logits = ctx.forward(x, ctx.model)
        feats = feats.detach()
        return (feats.float() if ctx.precision.dtype is not None else feats), logits

    def loss(self, x, y, idx):
        ctx = self.ctx
        rows = idx.shape[0]  # rows past idx: trusted rows, weight 1
        if self.active:
            feats, logits = self._batch_features(x, rows)
            sc = self.scorer.get(*self.cache, feats.dtype)
            d = sc.fbr_scores(feats, y[:rows], shift="second", alpha=self.alpha, on_missing_class="skip")
            w = threshold_weights(d, check_values=ctx.check_values).to(ctx.weight_dtype)
            self.weights[idx] = w  # idx holds no repeats: w is what weights[idx] now reads
        else:
            logits = ctx.forward(x, ctx.model)
            w = self.weights[idx]
        losses = ctx.per_sample_ce(logits, y)
        return weighted_loss(losses, with_trusted_rows(w.to(losses.dtype), losses.shape[0]), reduction="batch"), w

    @property
    def sample_weights(self):
        return self.weights

    def summary(self) -> dict:
        out = {}
        if self.warmup.start is not None:
            out["skip_epochs_used"] = self.warmup.start - 1
        if self.whitened is not None:
            out["whiten_strengths"] = list(self.whitened.strengths)
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "weights": self.weights.clone(),
                "whitened": None if self.whitened is None else self.whitened.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        w = state["weights"]
        V.check_float_vector("state['weights']", w, self.ctx.num_samples)
        self.weights = w.to(device=self.ctx.device, dtype=self.ctx.weight_dtype).clone()
        check_whitened_state(state["whitened"], self.whiten)
        if self.whitened is not None:
            self.whitened.load_state_dict(state["whitened"])
