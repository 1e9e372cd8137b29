"""Weight rules (SPEC §3.6) and the weighted loss (SPEC §3.7): what turns scores into a loss.

Typical FBR step (SPEC §3, §7)::

    d = fbr_scores(feats, y, clean_feats, clean_y, num_classes=C, shift="second")   # fastreweight.scores
    w = threshold_weights(d)                             # or: reweighter.step(idx, d)
    loss = weighted_loss(F.cross_entropy(logits, y, reduction="none"), w, reduction="batch")
"""
from __future__ import annotations

import math
import numbers

import torch

from . import backends, reference
from . import validate as V

__all__ = ["Reweighter", "threshold_weights", "stateless_weights", "weighted_loss", "WEIGHTED_LOSS_EPS"]


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Weight rules (SPEC §3.6) and the weighted loss (SPEC §3.7)
# ---------------------------------------------------------------------------------------------
def _check_scores(name: str, r, check_values: bool) -> torch.Tensor:
    V.check_float_vector(name, r)
    if check_values:
        vc = V.ValueChecks()
        vc.finite(name, r)
        vc.run()
    return r


def threshold_weights(scores: torch.Tensor, *, check_values: bool = True) -> torch.Tensor:
    """The published per-batch rule: 1 everywhere if no score is negative; else
    ``w_i = clip(0.5 + eta·r_i, 0, 1)`` with ``eta = 0.5 / min_{r_j<0} |r_j|``, then 0 where ``w_i <= 0.5``."""
    _check_scores("scores", scores, check_values)
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64) and \
            not scores.requires_grad and backends.unavailable_reason("cpp", scores.device) is None:
        return backends.load("cpp").threshold_weights(scores)  # one op instead of eight
    return reference.threshold_weights(scores)


def stateless_weights(scores: torch.Tensor, *, check_values: bool = True) -> torch.Tensor:
    """Learning-to-Reweight's rule ``max(r, 0) / mean(max(r, 0))``; all zeros if no score is positive."""
    _check_scores("scores", scores, check_values)
    return reference.stateless_weights(scores)


#: ``weighted_loss``'s default floor on ``Σ w`` for ``reduction="weight_sum"``.
WEIGHTED_LOSS_EPS = 1e-12


def weighted_loss(
    losses: torch.Tensor, w: torch.Tensor, *, reduction: str = "weight_sum", eps: float = WEIGHTED_LOSS_EPS
) -> torch.Tensor:
    """``Σ w_i l_i / max(Σ w_i, eps)`` (``"weight_sum"``) or ``Σ w_i l_i / B`` (``"batch"``, published).

    ``w`` should be >= 0 (the rules here give weights in [0, 1]); that is not checked, since a check of
    the values would synchronise with the device on every training step.  ``eps`` (a finite float
    > 0) keeps a batch whose weights are all 0 at loss 0 rather than nan."""
    if reduction not in V.REDUCTION_OPTIONS:
        V.check_option("reduction", reduction, V.REDUCTION_OPTIONS)
    if eps is not WEIGHTED_LOSS_EPS and (isinstance(eps, bool) or not isinstance(eps, numbers.Real)
                                         or not math.isfinite(eps) or eps <= 0):
        raise ValueError(f"eps must be a finite float > 0, got {eps!r}")
    # the metadata checks, inline for the common case (this runs on every training step)
    if not (isinstance(losses, torch.Tensor) and isinstance(w, torch.Tensor) and losses.dim() == 1
            and w.dim() == 1 and w.shape[0] == losses.shape[0] and losses.dtype in V.FLOAT_DTYPES
            and w.dtype in V.FLOAT_DTYPES and w.device == losses.device):
        V.check_float_vector("losses", losses)
        V.check_float_vector("w", w, losses.shape[0])
        V.check_same_device({"losses": losses, "w": w})
    return reference.weighted_loss(losses, w, reduction, eps)


def _check_step_options(lr, init, eps, prefix: str = "") -> tuple[float, float, float]:
    """``(lr, init, eps)`` as floats after the checks ``Reweighter`` makes.  ``prefix="state"``: they
    came from a state dict, and the messages name them ``state['lr']``, ..."""
    def label(name):
        return f"{prefix}[{name!r}]" if prefix else name

    out = []
    for name, v in (("lr", lr), ("init", init), ("eps", eps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{label(name)} must be a finite float, got {v!r}")
        out.append(float(v))
    lr, init, eps = out
    if lr < 0:
        raise ValueError(f"{label('lr')} must be >= 0, got {lr}")
    if not 0.0 <= init <= 1.0:
        raise ValueError(f"{label('init')} must lie in [0, 1], got {init}")
    if eps <= 0:
        raise ValueError(f"{label('eps')} must be > 0, got {eps}")
    return lr, init, eps


class Reweighter:
    """One weight per dataset sample, updated by clipped steps along the scores (SPEC §3.6).

    ``step(idx, scores)``: ``r^ = r / (mean|r| + eps)`` (``normalize_update="mean_abs"``; or
    ``"none"``), ``w[idx] <- clip(w[idx] + lr·r^, 0, 1)``; returns the batch's new weights.
    ``backend``: ``"auto"`` (the fused Triton kernel on CUDA, the C++ op on the CPU, the reference
    where neither is available), ``"reference"``, ``"triton"`` or ``"cpp"``; the one in use is
    ``self.backend``.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        lr: float = 0.5,
        init: float = 1.0,
        normalize_update: str = "mean_abs",
        eps: float = 1e-12,
        device=None,
        dtype: torch.dtype = torch.float32,
        backend: str = "auto",
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(f"num_samples must be a positive int, got {type(num_samples).__name__}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples}")
        lr, init, eps = _check_step_options(lr, init, eps)
        V.check_option("normalize_update", normalize_update, V.NORMALIZE_UPDATE_OPTIONS)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        V.check_option("backend", backend, ("auto", "reference", "triton", "cpp"))
        self.num_samples = num_samples
        self.lr = float(lr)
        self.init = float(init)
        self.normalize_update = normalize_update
        self.eps = float(eps)
        self.weights = torch.full((num_samples,), float(init), dtype=dtype, device=device)
        # The fused update (gather, normalise, clip, scatter in one launch / one op): the Triton kernel
        # on CUDA, the C++ op on the CPU, under "auto"; an explicitly requested one must be available.
        dev = self.weights.device
        if backend in ("triton", "cpp"):
            reason = backends.unavailable_reason(backend, dev)
            if reason is not None:
                raise backends.BackendUnavailable(f"backend={backend!r} cannot run the Reweighter update: {reason}")
            self.backend = backend
        elif backend == "auto":
            fast = {"cuda": "triton", "cpu": "cpp"}.get(dev.type)
            ok = fast is not None and backends.unavailable_reason(fast, dev) is None
            self.backend = fast if ok else "reference"
        else:
            self.backend = "reference"

    @property
    def weights(self) -> torch.Tensor:
        """The N per-sample weights: a view of a buffer with one spare entry past the end, where an
        unchecked out-of-range index writes on the reference (``_unchecked_reference_step``), so that no
        step needs a data-dependent shape (a host sync)."""
        return self._store[:self.num_samples]

    @weights.setter
    def weights(self, value: torch.Tensor) -> None:
        store = value.new_empty(value.shape[0] + 1)  # a copy: the buffer is the Reweighter's own
        store[:-1] = value
        store[-1] = 0
        self._store = store

    def step(self, idx: torch.Tensor, scores: torch.Tensor, *, check_values: bool = True) -> torch.Tensor:
        dev = self.weights.device
        # the metadata checks, inline for the common case (this runs on every training step)
        if not (isinstance(scores, torch.Tensor) and isinstance(idx, torch.Tensor)
                and scores.dim() == 1 and idx.dim() == 1 and idx.shape[0] == scores.shape[0]
                and scores.dtype in V.FLOAT_DTYPES and idx.dtype in V.INT_DTYPES
                and scores.device == dev and idx.device == dev):
            V.check_float_vector("scores", scores)
            V.check_label_vector("idx", idx, scores.shape[0], what="index")
            V.check_same_device({"weights": self.weights, "idx": idx, "scores": scores})
        if check_values:
            _check_scores("scores", scores, True)
            V.check_index_vector("idx", idx, scores.shape[0], self.num_samples, True)
        idx = idx.to(torch.int64)
        if self.backend != "reference":
            return backends.load(self.backend).reweighter_step(
                self.weights, idx, scores, self.lr, self.normalize_update, self.eps
            )
        if not check_values:  # unchecked indices: one out of range must not read or write another sample
            return self._unchecked_reference_step(idx, scores)
        new = reference.reweighter_update(
            self.weights[idx], scores.to(self.weights.dtype), self.lr, self.normalize_update, self.eps
        )
        self.weights[idx] = new
        return new

    def _unchecked_reference_step(self, idx: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The reference step with ``check_values=False``: an index outside ``[0, num_samples)`` is
        skipped and its returned weight is 0, as the fused kernels do (the numbers of such a call are
        meaningless, but no other sample's weight changes)."""
        valid = (idx >= 0) & (idx < self.num_samples)
        safe = idx.clamp(0, self.num_samples - 1)
        new = reference.reweighter_update(
            self.weights[safe], scores.to(self.weights.dtype), self.lr, self.normalize_update, self.eps
        )
        self._store[torch.where(valid, idx, self.num_samples)] = new  # out of range: the spare entry
        return torch.where(valid, new, torch.zeros_like(new))

    def state_dict(self) -> dict:
        return {
            "weights": self.weights.clone(),
            "num_samples": self.num_samples,
            "lr": self.lr,
            "init": self.init,
            "normalize_update": self.normalize_update,
            "eps": self.eps,
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or "weights" not in state:
            raise TypeError("state must be a dict from Reweighter.state_dict() holding 'weights'")
        w = state["weights"]
        V.check_float_vector("state['weights']", w, self.num_samples)
        V.check_option("state['normalize_update']", state.get("normalize_update", self.normalize_update), V.NORMALIZE_UPDATE_OPTIONS)
        vc = V.ValueChecks()
        vc.finite("state['weights']", w)
        vc.add(((w >= 0) & (w <= 1)).all(), lambda: "state['weights'] must lie in [0, 1]")
        vc.run()
        lr, init, eps = _check_step_options(state.get("lr", self.lr), state.get("init", self.init),
                                            state.get("eps", self.eps), prefix="state")
        self.weights = w.detach().to(device=self.weights.device, dtype=self.weights.dtype)
        self.lr, self.init, self.eps = lr, init, eps
        self.normalize_update = state.get("normalize_update", self.normalize_update)
