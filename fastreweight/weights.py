"""What users import in their training loops: scores, weight rules, the weighted loss.

Every scoring function is validate (``problem.build_problem``) → plan (``plan.make_plan``) →
dispatch to the reference or a fast backend.  ``last_plan()`` tells which backend and strategy the
most recent call on this thread used.

Typical FBR step (SPEC §3, §7)::

    feats, logits = ...                                   # penultimate features of the batch
    d = fbr_scores(feats, y, clean_feats, clean_y, num_classes=C, shift="second")
    w = threshold_weights(d)                             # or: reweighter.step(idx, d)
    loss = weighted_loss(F.cross_entropy(logits, y, reduction="none"), w, reduction="batch")

In a training loop that scores many batches against the same clean features, ``CleanScorer``
(``scorer.py``) validates and prepares the clean side once: ``CleanScorer(clean_feats, clean_y,
num_classes=C).fbr_scores(feats, y)`` gives the same scores with only the batch side checked per call.
"""
from __future__ import annotations

import math

import torch

from . import backends, plan as plan_mod, reference
from . import validate as V
from .problem import build_problem
from .scorer import CleanScorer

__all__ = [
    "CleanScorer",
    "class_similarity",
    "fbr_scores",
    "fbr_from_similarity",
    "meta_scores",
    "Reweighter",
    "threshold_weights",
    "stateless_weights",
    "weighted_loss",
    "last_plan",
]

def last_plan() -> plan_mod.Plan | None:
    """The plan (strategy, backend, reason) of the latest scoring call on this thread."""
    return plan_mod.last()


def _dispatch_similarity(problem, strategy, backend):
    V.check_option("strategy", strategy, V.STRATEGY_OPTIONS)
    V.check_option("backend", backend, V.BACKEND_OPTIONS)
    p = plan_mod.make_plan(problem, strategy, backend)
    plan_mod.record(p)
    return p, backends.load(p.backend)


def class_similarity(
    x,
    y,
    clean_x,
    clean_y,
    *,
    num_classes: int | None = None,
    center: str = "clean",
    normalize: str | None = None,
    x2=None,
    clean_x2=None,
    strategy: str = "auto",
    backend: str = "auto",
    on_missing_class: str = "raise",
    check_values: bool = True,
) -> torch.Tensor:
    """S (B×C): mean pair similarity of each batch row to the clean samples of each class.

    ``S_ic = (1/M_c) Σ_{j: u_j = c} K_ij`` (SPEC §3.1–3.3) with the feature kernel
    ``K_ij = <X~_i, Z~_j>``, or the gradient kernel ``<X~_i, Z~_j>·<E_i, F_j>`` when ``x2`` /
    ``clean_x2`` are given.  ``x``/``clean_x`` (and ``x2``/``clean_x2``) may be lists of per-layer
    factors; the kernel is then the sum over layers.  Columns of classes absent from the clean
    subset are 0.  ``num_classes`` defaults to ``max(label) + 1``, which reads the labels back
    (pass it to avoid the sync).  ``check_values=False`` skips the data-dependent checks (labels in
    range, NaN/Inf, missing classes) and their host synchronisation.

    Returns float64 for float64 inputs, float32 otherwise.
    """
    problem = build_problem(
        x, clean_x, y=y, clean_y=clean_y, x2=x2, clean_x2=clean_x2, num_classes=num_classes,
        center=center, normalize=normalize, check_values=check_values, on_missing_class=on_missing_class,
    )
    p, mod = _dispatch_similarity(problem, strategy, backend)
    return mod.class_similarity(problem, p.strategy)


def fbr_scores(
    x,
    y,
    clean_x,
    clean_y,
    *,
    num_classes: int | None = None,
    center: str = "clean",
    normalize: str | None = None,
    x2=None,
    clean_x2=None,
    shift: str = "max",
    alpha: float = 0.0,
    strategy: str = "auto",
    backend: str = "auto",
    on_missing_class: str = "raise",
    check_values: bool = True,
) -> torch.Tensor:
    """FBR score per batch row (SPEC §3.4).

    ``d_i = (S_{i,y_i} − b_i) − alpha · Σ_{c ≠ y_i, M_c > 0} (S_ic − b_i)`` with the row shift
    ``b_i`` chosen by ``shift``: ``"second"`` (second-largest present class, the published choice),
    ``"max"`` (best competing class), ``"mean"`` (mean competing class) or ``"none"``.
    Rows whose own class is absent from the clean subset raise, or get 0 with
    ``on_missing_class="skip"``.  The clean subset must hold at least two classes.
    """
    V.check_option("shift", shift, V.SHIFT_OPTIONS)
    alpha = V.check_alpha(alpha)
    problem = build_problem(
        x, clean_x, y=y, clean_y=clean_y, x2=x2, clean_x2=clean_x2, num_classes=num_classes,
        center=center, normalize=normalize, check_values=check_values,
        require_two_classes=True, on_missing_class=on_missing_class,
    )
    p, mod = _dispatch_similarity(problem, strategy, backend)
    fused = getattr(mod, "fbr_scores", None)
    if fused is not None:
        return fused(problem, p.strategy, shift, alpha)
    S = mod.class_similarity(problem, p.strategy)
    return reference.fbr_from_similarity(S, problem.y, problem.present, shift, alpha)


def fbr_from_similarity(
    S: torch.Tensor, y: torch.Tensor, present: torch.Tensor, *, shift: str = "max", alpha: float = 0.0
) -> torch.Tensor:
    """The FBR epilogue alone (SPEC §3.4) on a class-similarity matrix ``S`` (B×C) from
    ``class_similarity``; ``present`` (C, bool) marks the classes of the clean subset.  Rows whose
    label is absent or out of range get 0."""
    V.check_option("shift", shift, V.SHIFT_OPTIONS)
    alpha = V.check_alpha(alpha)
    V.check_float_matrix("S", S)
    V.check_label_vector("y", y, S.shape[0])
    V.check_tensor("present", present)
    if present.dtype != torch.bool or present.shape != (S.shape[1],):
        raise ValueError(f"present must be a bool tensor of shape [{S.shape[1]}], got {present.dtype} {tuple(present.shape)}")
    V.check_same_device({"S": S, "y": y, "present": present})
    return reference.fbr_from_similarity(S, y.to(torch.int64), present, shift, alpha)


def meta_scores(
    x,
    x2,
    clean_x,
    clean_x2,
    *,
    center: str = "none",
    normalize: str | None = None,
    clean_y=None,
    strategy: str = "auto",
    backend: str = "auto",
    check_values: bool = True,
) -> torch.Tensor:
    """One-step meta-reweighting direction ``r_i = (1/M) Σ_j K_ij`` with the gradient kernel (SPEC §3.5).

    With ``x`` the inputs of the captured ``nn.Linear`` layers and ``x2`` the gradients of the loss
    with respect to their outputs (see ``fastreweight.capture``), ``r_i`` is the inner product of
    sample i's per-sample gradient with the mean clean gradient, exactly, for those layers.
    ``center="clean"`` subtracts the clean mean of ``clean_x`` (class-balanced if ``clean_y`` is
    given).
    """
    if x2 is None or clean_x2 is None:
        raise ValueError("x2 and clean_x2 are required: meta_scores uses the gradient kernel (SPEC §3.5)")
    problem = build_problem(
        x, clean_x, x2=x2, clean_x2=clean_x2, center=center, normalize=normalize,
        check_values=check_values, center_labels=clean_y,
    )
    p, mod = _dispatch_similarity(problem, strategy, backend)
    return mod.class_similarity(problem, p.strategy)[:, 0]


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
    """``Σ w_i l_i / max(Σ w_i, eps)`` (``"weight_sum"``) or ``Σ w_i l_i / B`` (``"batch"``, published)."""
    if reduction not in V.REDUCTION_OPTIONS:
        V.check_option("reduction", reduction, V.REDUCTION_OPTIONS)
    # the metadata checks, inline for the common case (this runs on every training step)
    if not (isinstance(losses, torch.Tensor) and isinstance(w, torch.Tensor) and losses.dim() == 1
            and w.dim() == 1 and w.shape[0] == losses.shape[0] and losses.dtype in V.FLOAT_DTYPES
            and w.dtype in V.FLOAT_DTYPES and w.device == losses.device):
        V.check_float_vector("losses", losses)
        V.check_float_vector("w", w, losses.shape[0])
        V.check_same_device({"losses": losses, "w": w})
    return reference.weighted_loss(losses, w, reduction, eps)


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
        for name, v in (("lr", lr), ("init", init), ("eps", eps)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite float, got {v!r}")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= init <= 1.0:
            raise ValueError(f"init must lie in [0, 1], got {init}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
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

    def step(self, idx: torch.Tensor, scores: torch.Tensor, *, check_values: bool = True) -> torch.Tensor:
        dev = self.weights.device
        # the metadata checks, inline for the common case (this runs on every training step)
        if not (isinstance(scores, torch.Tensor) and isinstance(idx, torch.Tensor)
                and scores.dim() == 1 and idx.dim() == 1 and idx.shape[0] == scores.shape[0]
                and scores.dtype in V.FLOAT_DTYPES and idx.dtype in V.INT_DTYPES
                and scores.device == dev and idx.device == dev):
            V.check_float_vector("scores", scores)
            V.check_label_vector("idx", idx, scores.shape[0])
            V.check_same_device({"weights": self.weights, "idx": idx, "scores": scores})
        if check_values:
            _check_scores("scores", scores, True)
            V.check_index_vector("idx", idx, scores.shape[0], self.num_samples, True)
        idx = idx.to(torch.int64)
        if self.backend != "reference":
            return backends.load(self.backend).reweighter_step(
                self.weights, idx, scores, self.lr, self.normalize_update, self.eps
            )
        new = reference.reweighter_update(
            self.weights[idx], scores.to(self.weights.dtype), self.lr, self.normalize_update, self.eps
        )
        self.weights[idx] = new
        return new

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
        self.weights = w.detach().to(device=self.weights.device, dtype=self.weights.dtype).clone()
        self.lr = float(state.get("lr", self.lr))
        self.init = float(state.get("init", self.init))
        self.normalize_update = state.get("normalize_update", self.normalize_update)
        self.eps = float(state.get("eps", self.eps))
