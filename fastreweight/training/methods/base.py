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

__all__ = ["Method", "RunContext", "make_context"]


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


def make_context(model: nn.Module, optimizer, clean, *, num_samples: int, epochs: int, num_classes: int | None = None,
                 precision: Precision | None = None, parallel: SingleProcess | None = None, net: nn.Module | None = None,
                 device=None, check_values: bool = False) -> RunContext:
    """A ``RunContext``: the clean set moved to the model's device and dtype, ``num_classes`` the
    model's output width (checked against ``num_classes`` when given, and against the clean labels)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int (the training set's size), got {num_samples!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    params = [p for p in model.parameters()]
    device = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    clean = (clean if isinstance(clean, CleanSet) else CleanSet(*clean)).to(device, dtype)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    num_classes = _check_classes(num_classes, output_width(model, clean.x), clean.y)
    if precision is None:
        precision = Precision()
        precision.setup(device)
    return RunContext(model=model, net=model if net is None else net, optimizer=optimizer, clean=clean,
                      num_samples=num_samples, num_classes=num_classes, epochs=epochs, device=device, dtype=dtype,
                      precision=precision, parallel=parallel if parallel is not None else SingleProcess(),
                      clean_batch_size=clean.batch_size, eval_batch_size=clean.feature_batch_size,
                      check_values=check_values)


@torch.no_grad()
def output_width(model: nn.Module, x: torch.Tensor) -> int | None:
    """The number of logits ``model`` returns per row, from an eval-mode forward of up to two rows of
    ``x`` (``None`` where the model cannot run them; training then shows the model's own error).

    Eval mode and no_grad: the probe moves no BatchNorm statistic and draws no dropout mask, so a run
    is the same with or without it; it is made before any training step so that a model the methods
    cannot use fails here, not inside a loss."""
    rows = x[:2]  # two rows: a layer that normalises over the batch even in eval mode needs more than one
    was = model.training
    model.eval()
    try:
        out = model(rows)
    except Exception:  # the model cannot run this probe (e.g. a batch statistic over one clean row): no width
        return None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != rows.shape[0]:
        got = type(out).__name__ if not isinstance(out, torch.Tensor) else f"a tensor of shape {tuple(out.shape)}"
        raise TypeError(f"model must return a logits tensor of shape (batch, num_classes), got {got} for a batch of "
                        f"{rows.shape[0]} rows; a model with several outputs needs a wrapper whose forward returns "
                        "the logits only")
    return int(out.shape[1])


def _check_classes(num_classes: int | None, width: int | None, clean_y: torch.Tensor) -> int:
    """``num_classes`` (default: the model's output ``width``), which every clean label must be below.
    ``width=None`` (the probe could not run the model): ``num_classes``, else the clean labels' ``max + 1``."""
    if width is None:
        return num_classes if num_classes is not None else int(clean_y.max()) + 1
    if num_classes is not None and num_classes != width:
        raise ValueError(f"num_classes={num_classes} but the model returns {width} logits per row; they must agree")
    top = int(clean_y.max())
    if top >= width:
        raise ValueError(f"the clean labels reach class {top} but the model returns {width} logits per row")
    return width


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
            raise ValueError(f"{type(self).__name__} does not support Distributed(); supported: ERM, NeighbourRelabel "
                             "and FBR (clean_features='cache')")
        self.ctx = ctx

    def bind(self, model: nn.Module, optimizer: torch.optim.Optimizer, clean, *, num_samples: int, epochs: int,
             num_classes: int | None = None, precision: Precision | None = None,
             check_values: bool = False) -> "Method":
        """Attach to a loop of your own (one process; ``Trainer`` does this for its runs) and return
        ``self``.  ``clean``: a ``CleanSet`` or ``(x, y)`` tensors; ``num_samples``: the training set's
        size (one weight per sample); ``epochs``: the run's length (the auto warm-up's cap)."""
        self.attach(make_context(model, optimizer, clean, num_samples=num_samples, epochs=epochs,
                                 num_classes=num_classes, precision=precision, check_values=check_values))
        return self

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
        # a method object may be attached to several runs: nothing of the last one may carry over
        self.warmup.setup(ctx.epochs)
        self._features, self.active = None, False

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
