"""The interface every training method implements, and the run context it is attached to.

A method owns and checks its options at construction and its per-run state after ``attach``.  The
loop (``fastreweight.training.Trainer``) — or a user's own loop — calls, per epoch::

    method.begin_epoch(epoch)
    for x, y, idx in loader:
        loss, w = method.loss(x, y, idx)        # the forward(s), the weights, the weighted loss
        precision.backward_step(loss, method.optimizers())
        method.after_step()
    method.end_epoch(epoch)

``clean_loss(x, y)`` is the loss of a clean pass (ordinary mean cross-entropy).  ``state_dict()``
holds everything a resumed run needs beyond the model and optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..clean import CleanSet
from ..parallel import SingleProcess
from ..precision import Precision

__all__ = ["Method", "RunContext"]


@dataclass
class RunContext:
    """What a method is attached to."""

    model: nn.Module  # the plain module
    net: nn.Module  # what training forwards go through (the DDP wrapper when distributed)
    optimizer: torch.optim.Optimizer
    clean: CleanSet  # on the device, inputs in the parameters' dtype
    num_samples: int
    num_classes: int
    epochs: int
    device: torch.device
    dtype: torch.dtype  # the parameters'
    precision: Precision
    parallel: SingleProcess
    clean_batch_size: int = 128
    eval_batch_size: int = 1024
    check_values: bool = False

    @property
    def weight_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def forward(self, x: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        with self.precision.autocast():
            return (self.net if net is None else net)(x)

    def per_sample_ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.precision.loss_input(logits), y, reduction="none")

    def mean_ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.parallel.mean_ce(self.precision.loss_input(logits), y)


class Method:
    """Base class: ERM's behaviour (uniform weights), no per-sample state."""

    name = "method"
    #: whether ``Trainer`` under ``Distributed()`` can run it
    supports_distributed = False

    def __init__(self) -> None:
        self.ctx: RunContext | None = None

    # -- options ------------------------------------------------------------------------------
    def options(self) -> dict:
        """The method's options (recorded in ``TrainResult.config``)."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    # -- run ------------------------------------------------------------------------------------
    def attach(self, ctx: RunContext) -> None:
        if ctx.parallel.distributed and not self.supports_distributed:
            raise ValueError(f"{type(self).__name__} does not support Distributed(); supported: ERM and FBR "
                             "(clean_features='cache')")
        self.ctx = ctx

    def _require_attached(self) -> RunContext:
        if self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a run: call attach(context) "
                               "(the Trainer does) first")
        return self.ctx

    def optimizers(self) -> list:
        """The optimisers each step updates (a second network's too, for co-teaching)."""
        return [self.ctx.optimizer]

    def models(self) -> list:
        return [self.ctx.model]

    def begin_epoch(self, epoch: int) -> None:
        pass

    def loss(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
        """``(loss, weights of the idx rows or None for all-ones)`` of one training batch."""
        raise NotImplementedError

    def clean_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.ctx.mean_ce(self.ctx.forward(x), y)

    def after_step(self) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        pass

    def close(self) -> None:
        """Release what the run registered (hooks)."""

    # -- what the run exposes -------------------------------------------------------------------
    @property
    def sample_weights(self) -> torch.Tensor | None:
        """One weight per training sample, where the method keeps them."""
        return None

    @property
    def reweight_start_epoch(self) -> int | None:
        return None

    def summary(self) -> dict:
        """Facts of the finished run for ``TrainResult.config`` (e.g. the warm-up actually used)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def as_warmup(warmup) -> "Warmup":
    """An int number of epochs, ``"auto"`` or a ``Warmup``."""
    from ..warmup import Warmup

    return warmup if isinstance(warmup, Warmup) else Warmup(warmup)


class WarmupMethod(Method):
    """A method that reweights only after a warm-up (``fastreweight.training.Warmup``)."""

    def __init__(self, warmup) -> None:
        super().__init__()
        self.warmup = as_warmup(warmup)
        self._features = None  # a FeatureSource for the auto warm-up's probe, made on first use
        self.active = False  # reweighting in the current epoch

    def attach(self, ctx: RunContext) -> None:
        super().attach(ctx)
        self.warmup.setup(ctx.epochs)

    def begin_epoch(self, epoch: int) -> None:
        self.active = self.warmup.active(epoch)

    def feature_source(self):
        if self._features is None:
            from ..features import FeatureSource

            self._features = FeatureSource(self.ctx.model, from_training_forward=False,
                                           distributed=self.ctx.parallel.distributed)
        return self._features

    def end_epoch(self, epoch: int) -> None:
        if self.warmup.waiting:
            from ..warmup import prototype_probe

            ctx = self.ctx
            feats = self.feature_source().eval_features(ctx.clean.x, ctx.eval_batch_size)
            self.warmup.update(epoch, prototype_probe(feats, ctx.clean.y, ctx.num_classes))

    def close(self) -> None:
        if self._features is not None:
            self._features.close()

    @property
    def reweight_start_epoch(self) -> int | None:
        return self.warmup.start

    def state_dict(self) -> dict:
        return {"warmup": self.warmup.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.warmup.load_state_dict(state["warmup"])
