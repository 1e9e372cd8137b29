"""Stateful feature-based reweighting: the library's FBR (SPEC §3–§5).

Per step: the batch's penultimate features are scored against the clean subset's
(``fbr_scores(shift, alpha)``: how much more a sample resembles the clean samples of its own label
than those of the best other class) and a ``Reweighter`` — one weight per training sample, initial 1 —
moves the batch's weights by a clipped step of ``step_size``; the loss is
``Σ w_i·CE_i / max(Σ w_i, eps)`` (``reduction="weight_sum"``).  Warm-up epochs train with weight 1.

Clean features (SPEC §5), ``clean_features``:

* ``"cache"`` (default): all clean features, eval mode, no_grad, refreshed every ``refresh_every``
  reweighting steps (``"auto"``: once per epoch, ``ceil(N/B)`` steps, so refreshing costs ``M/N`` of an
  epoch's forward passes).  The cached side is prepared once per refresh (``CleanScorer``); scores and
  the Reweighter update run as one op where the backend fuses them.
* ``"batch"``: the features of a fresh clean mini-batch at every step.

``whiten`` (``"cache"`` only; default ``None``): ``"auto"`` or a strength ``t > 0`` scores against the
cached clean features whitened by their own covariance, folded into the C class means at each refresh
(``fastreweight.whiten.shrunk_class_means``), so a step costs what it costs without it; ``"auto"``
picks ``t`` or the plain means by leave-one-out on the clean subset.  ``whiten_every=k`` refits the
whitening at every k-th refresh only; the refreshes between shrink the new class means by the last fit
(``ShrunkMeans.refold``).  FBR's recommended setting is ``FBR(whiten="auto", whiten_every=10)``.

``batch_features``: ``"train"`` (default, free: from the training forward) or ``"eval"`` (an extra
eval-mode forward per batch).
"""
from __future__ import annotations


import torch

from ...clean_scorer import CleanScorer
from ...scores import fbr_scores
from ...whiten import ShrunkMeans, check_whiten, shrunk_class_means
from ... import validate as V
from ..features import FeatureSource
from .base import WarmupMethod

__all__ = ["FBR"]

_REDUCTIONS = ("weight_sum", "batch")


def check_whiten_option(whiten, every) -> tuple:
    try:
        whiten = check_whiten(whiten)
    except ValueError:
        raise ValueError(f"whiten must be None, 'auto' or a positive number, got {whiten!r}") from None
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"whiten_every must be an int >= 1, got {every!r}")
    return whiten, every


class WhitenedCleanSide:
    """The whitened class means that stand for the clean side: a new fit at every ``every``-th
    refresh, the last fit's fold of the new means in between."""

    def __init__(self, whiten, every: int) -> None:
        self.whiten, self.every = whiten, every
        self.fit: ShrunkMeans | None = None
        self.refreshes = 0
        self.strengths: list = []  # the strength used at each refresh (None: the plain means)

    def __call__(self, Z, y, num_classes, shift, alpha, check_values):
        if self.fit is None or self.refreshes % self.every == 0:
            self.fit = shrunk_class_means(Z, y, num_classes, whiten=self.whiten, shift=shift, alpha=alpha,
                                          check_values=check_values)
        else:
            self.fit = self.fit.refold(Z, y, num_classes)
        self.refreshes += 1
        self.strengths.append(self.fit.strength)
        return self.fit.rows, self.fit.labels

    def state_dict(self) -> dict:
        fit = None
        if self.fit is not None:
            fit = {"rows": self.fit.rows, "labels": self.fit.labels, "strength": self.fit.strength,
                   "basis": self.fit.basis, "shrink": self.fit.shrink}
        return {"fit": fit, "refreshes": self.refreshes, "strengths": list(self.strengths)}

    def load_state_dict(self, state: dict) -> None:
        fit = state["fit"]
        self.fit = None if fit is None else ShrunkMeans(rows=fit["rows"], labels=fit["labels"],
                                                          strength=fit["strength"], basis=fit["basis"],
                                                          shrink=fit["shrink"])
        self.refreshes, self.strengths = int(state["refreshes"]), list(state["strengths"])


def check_whitened_state(saved, whiten) -> None:
    """A checkpoint's whitening state (``None`` without whitening) must match the run's ``whiten``
    option; checkpoints that store the method's options are compared option by option first."""
    if (saved is None) != (whiten is None):
        had = "without whitening (whiten=None)" if saved is None else "with whitening"
        raise ValueError(f"checkpoint was written by a run {had}, this run has whiten={whiten!r}; resume with the "
                         "checkpoint's whiten option")


class CachedScorer:
    """The ``CleanScorer`` of the current clean cache: built on first use (or for a new dtype), then
    refreshed in place when the cache holds new features (the labels are the same at every refresh,
    so only what depends on the values is recomputed)."""

    def __init__(self, num_classes: int, check_values: bool) -> None:
        self.num_classes, self.check_values = num_classes, check_values
        self.scorer: CleanScorer | None = None
        self.stale = False

    def get(self, Z, u, dtype) -> CleanScorer:
        sc = self.scorer
        if sc is None or sc.dtype != dtype:
            sc = self.scorer = CleanScorer(Z.to(dtype), u, num_classes=self.num_classes, center="clean",
                                           check_values=self.check_values)
        elif self.stale:
            sc.refresh(Z.to(dtype))
        self.stale = False
        return sc


def with_trusted_rows(w: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The batch's weights followed by weight 1 for rows past its ``idx`` (trusted, never scored)."""
    extra = n_rows - w.shape[0]
    return w if extra == 0 else torch.cat([w, torch.ones(extra, dtype=w.dtype, device=w.device)])


class FBR(WarmupMethod):
    """Stateful FBR (see the module doc).  ``step_size`` is the ``Reweighter``'s step (default 0.1: the
    best of 0.1/0.5/1.0 in the committed ablation)."""

    name = "fbr-stateful"
    supports_distributed = True
    CLEAN_FEATURES = ("cache", "batch")

    def __init__(self, *, step_size: float = 0.1, shift: str = "max", alpha: float = 0.0, warmup="auto",
                 clean_features: str = "cache", refresh_every: int | str = "auto", whiten=None,
                 whiten_every: int = 1, batch_features: str = "train", reduction: str = "weight_sum") -> None:
        super().__init__(warmup)
        V.check_option("shift", shift, V.SHIFT_OPTIONS)
        V.check_option("clean_features", clean_features, self.CLEAN_FEATURES)
        V.check_option("batch_features", batch_features, ("train", "eval"))
        V.check_option("reduction", reduction, _REDUCTIONS)
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not step_size > 0:
            raise ValueError(f"step_size must be a positive number, got {step_size!r}")
        if refresh_every != "auto" and (isinstance(refresh_every, bool) or not isinstance(refresh_every, int)
                                        or refresh_every < 1):
            raise ValueError(f"refresh_every must be 'auto' or an int >= 1, got {refresh_every!r}")
        whiten, whiten_every = check_whiten_option(whiten, whiten_every)
        if whiten is not None and clean_features != "cache":
            raise ValueError(f"whiten needs clean_features='cache', got clean_features={clean_features!r}")
        self.step_size, self.shift, self.alpha = float(step_size), shift, V.check_alpha(alpha)
        self.clean_features, self.refresh_every = clean_features, refresh_every
        self.whiten, self.whiten_every = whiten, whiten_every
        self.batch_features, self.reduction = batch_features, reduction

    def options(self) -> dict:
        return dict(step_size=self.step_size, shift=self.shift, alpha=self.alpha, warmup=self.warmup.epochs,
                    clean_features=self.clean_features, refresh_every=self.refresh_every, whiten=self.whiten,
                    whiten_every=self.whiten_every, batch_features=self.batch_features, reduction=self.reduction)

    def attach(self, ctx) -> None:
        if ctx.parallel.distributed and self.clean_features != "cache":
            raise ValueError(f"FBR under Distributed() needs clean_features='cache', got {self.clean_features!r}")
        super().attach(ctx)
        self.reweighter = ctx.parallel.reweighter(ctx.num_samples, lr=self.step_size, init=1.0, device=ctx.device,
                                                  dtype=ctx.weight_dtype)
        self._features = FeatureSource(ctx.model, from_training_forward=self.batch_features == "train",
                                       distributed=ctx.parallel.distributed)
        self.cache = None  # (Z, labels) of the clean side
        self.steps = 0  # reweighting steps taken
        self.scorer = CachedScorer(ctx.num_classes, ctx.check_values)
        self.whitened = WhitenedCleanSide(self.whiten, self.whiten_every) if self.whiten is not None else None

    def feature_source(self):
        return self._features

    # -- the clean side -------------------------------------------------------------------------
    def clean_side(self):
        ctx = self.ctx
        if self.clean_features == "batch":
            xb_c, yb_c = ctx.clean.sample(ctx.clean_batch_size)
            return self._features.eval_features(xb_c, ctx.eval_batch_size), yb_c
        if self.cache is None or self._refresh_due():
            Z, u = self._features.eval_features(ctx.clean.x, ctx.eval_batch_size), ctx.clean.y
            if self.whitened is not None:  # C rows standing for the whitened clean side
                Z, u = self.whitened(Z, u, ctx.num_classes, self.shift, self.alpha, ctx.check_values)
            self.cache = (Z, u)
            self.scorer.stale = True  # the scorer takes them on first use, in the batch features' dtype
        return self.cache

    def _refresh_due(self) -> bool:
        if self.refresh_every == "auto":  # at the epoch's first reweighting step
            return self._epoch_steps == 0
        return self.steps % self.refresh_every == 0

    # -- one step -------------------------------------------------------------------------------
    def loss(self, x, y, idx):
        ctx = self.ctx
        rows = idx.shape[0]
        if not self.active:
            return ctx.mean_ce(ctx.forward(x), y), self.reweighter.weights[idx]
        feats, logits = self._batch_features(x, rows)
        w = self._reweight(idx, feats, y[:rows] if y.shape[0] != rows else y)
        self.steps += 1
        self._epoch_steps += 1
        losses = ctx.per_sample_ce(logits, y)
        return ctx.parallel.weighted_loss(losses, with_trusted_rows(w.to(losses.dtype), y.shape[0]),
                                          self.reduction), w

    def _batch_features(self, x, rows):
        ctx = self.ctx
        if self.batch_features == "eval":
            feats = self._features.eval_features(x[:rows], ctx.eval_batch_size) if rows else None
            return feats, ctx.forward(x)
        return self._features.train_forward(ctx.net, x, rows, ctx.precision)

    def _reweight(self, idx, feats, y):
        ctx = self.ctx
        Z, u = self.clean_side()
        if y.shape[0] == 0:  # an empty shard (distributed): nothing to score, but the collectives still run
            d = torch.zeros(0, dtype=ctx.weight_dtype, device=ctx.device)
            return self.reweighter.step(idx, d, check_values=ctx.check_values)
        if self.clean_features == "cache":
            sc = self.scorer.get(Z, u, feats.dtype)
            return sc.reweight(self.reweighter, idx, feats, y, shift=self.shift, alpha=self.alpha,
                               on_missing_class="skip")[1]
        d = fbr_scores(feats, y, Z.to(feats.dtype), u, num_classes=ctx.num_classes, shift=self.shift,
                       alpha=self.alpha, on_missing_class="skip", check_values=ctx.check_values)
        return self.reweighter.step(idx, d, check_values=ctx.check_values)

    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        self._epoch_steps = 0

    # -- state ----------------------------------------------------------------------------------
    @property
    def sample_weights(self):
        return self.reweighter.weights

    def summary(self) -> dict:
        out = {"refresh_every": self.refresh_every}
        if self.whitened is not None:
            out["whiten_strengths"] = list(self.whitened.strengths)
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "reweighter": self.reweighter.state_dict(), "steps": self.steps,
                "cache": None if self.cache is None else list(self.cache),
                "whitened": None if self.whitened is None else self.whitened.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.reweighter.load_state_dict(state["reweighter"])
        self.steps = int(state["steps"])
        self.cache = None if state["cache"] is None else tuple(state["cache"])
        self.scorer.scorer, self.scorer.stale = None, True
        check_whitened_state(state["whitened"], self.whiten)
        if self.whitened is not None:
            self.whitened.load_state_dict(state["whitened"])
