"""Per-sample scores against the clean subset: the class similarity, the FBR score and the
one-step meta-reweighting direction (SPEC §3.1–3.5).

Every function is validate (``problem.build_problem``) → plan (``plan.make_plan``) → dispatch to the
reference or a fast backend.  ``last_plan()`` tells which backend and strategy the most recent call on
this thread used.  Scoring many batches against the same clean features: ``clean_scorer.CleanScorer``.
"""
from __future__ import annotations

import torch

from . import backends, plan as plan_mod, reference
from . import validate as V
from .problem import build_problem

__all__ = ["class_similarity", "fbr_scores", "fbr_from_similarity", "meta_scores", "last_plan"]


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
