"""The pure-PyTorch reference: SPEC §3–4 written as literally as possible.

This module is the *definition* every fast backend is tested against.  It favours clarity over
speed: it centres the features explicitly (``X~ = X - mu``), normalises rows explicitly, and the
pairwise strategy materialises the pair kernel ``K`` — in column chunks, so that memory stays
bounded (``B × chunk`` at a time) even for a large clean subset.  Per-sample gradients are never
materialised: the gradient kernel is the product of two Grams (SPEC §3.2).

All arithmetic runs in ``problem.acc_dtype`` (float64 for float64 inputs, float32 otherwise; half
precision inputs are upcast on load, as the fused kernels accumulate them in fp32).
"""
from __future__ import annotations

import torch

from .problem import Problem

# Column chunk of the materialised pair kernel: B × _CHUNK values at a time.
_PAIR_CHUNK_ELEMS = 1 << 24


def _rownorm_scale(t: torch.Tensor) -> torch.Tensor:
    """1/||t_i||, with 0 for an all-zero row (its cosine with anything is taken as 0)."""
    n = torch.linalg.vector_norm(t, dim=1)
    return torch.where(n > 0, 1.0 / n.clamp_min(torch.finfo(t.dtype).tiny), torch.zeros((), dtype=t.dtype, device=t.device))


def _feature_side(t: torch.Tensor, mu, cosine: bool, acc: torch.dtype) -> torch.Tensor:
    """One side's first factor: X~ = X − mu (if centring), unit rows for cosine, in ``acc``."""
    t = t.to(acc)
    if mu is not None:
        t = t - mu
    return t * _rownorm_scale(t)[:, None] if cosine else t


def _second_side(t, cosine: bool, acc: torch.dtype):
    """One side's second factor (never centred), unit rows for cosine; None stays None."""
    if t is None:
        return None
    t = t.to(acc)
    return t * _rownorm_scale(t)[:, None] if cosine else t


def _prepared_factors(problem: Problem):
    """Per layer: centred (and, for cosine, unit-norm) factors in the accumulation dtype."""
    acc, cos = problem.acc_dtype, problem.cosine
    return [
        (_feature_side(l.x, l.mu, cos, acc), _feature_side(l.z, l.mu, cos, acc),
         _second_side(l.e, cos, acc), _second_side(l.f, cos, acc))
        for l in problem.layers
    ]


def clean_class_matrix(problem: Problem) -> torch.Tensor:
    """A (M×C): A_jc = 1/M_c if u_j = c else 0, so that S = K·A (SPEC §3.3).

    It depends on the clean labels only: memoised in ``problem.clean_memo`` (``CleanScorer.refresh``
    keeps it when the clean features change)."""
    A = problem.clean_memo.get("class_matrix")
    if A is None or A.dtype != problem.acc_dtype:
        A = problem.clean_memo["class_matrix"] = _class_matrix(problem)
    return A


def _class_matrix(problem: Problem) -> torch.Tensor:
    C = problem.num_classes
    u = problem.clean_y
    valid = (u >= 0) & (u < C)
    uc = u.clamp(0, C - 1)
    A = torch.zeros(u.shape[0], C, dtype=problem.acc_dtype, device=problem.device)
    A[torch.arange(u.shape[0], device=u.device), uc] = torch.where(
        valid, problem.class_weight[uc], torch.zeros((), dtype=problem.acc_dtype, device=problem.device)
    )
    return A


def _pair_kernel_block(factors, cols: slice) -> torch.Tensor:
    """K[:, cols] (B × |cols|): Σ_layers <X~_i, Z~_j> · <E_i, F_j> (second factor optional)."""
    K = None
    for x, z, e, f in factors:
        term = x @ z[cols].T
        if e is not None:
            term = term * (e @ f[cols].T)
        K = term if K is None else K + term
    return K


def class_similarity_pairwise(problem: Problem) -> torch.Tensor:
    """S = K · A with K materialised a column chunk at a time."""
    B, M = problem.batch_size, problem.num_clean
    A = clean_class_matrix(problem)
    S = torch.zeros(B, problem.num_classes, dtype=problem.acc_dtype, device=problem.device)
    if B == 0:
        return S
    chunk = max(1, _PAIR_CHUNK_ELEMS // max(B, 1))
    factors = _prepared_factors(problem)
    for start in range(0, M, chunk):
        cols = slice(start, min(M, start + chunk))
        S += _pair_kernel_block(factors, cols) @ A[cols]
    return S


def _clean_prototypes(problem: Problem) -> list[torch.Tensor]:
    """Per layer, the clean side aggregated by class: P = Aᵀ Z~ (C×d) or G (C×k×d).

    It depends on the clean inputs only, so it is memoised in ``problem.clean_memo`` (shared by
    calls with the same clean tensors, see ``problem.CleanCache``)."""
    key = ("reference-prototypes", problem.cosine)
    if key not in problem.clean_memo:
        acc, cos = problem.acc_dtype, problem.cosine
        A = clean_class_matrix(problem)
        protos = []
        for layer in problem.layers:
            z = _feature_side(layer.z, layer.mu, cos, acc)
            if layer.f is None:
                protos.append(A.T @ z)
            else:
                protos.append(torch.einsum("jc,jk,jd->ckd", A, _second_side(layer.f, cos, acc), z))
        problem.clean_memo[key] = protos
    return problem.clean_memo[key]


def class_similarity_prototype(problem: Problem) -> torch.Tensor:
    """Aggregate the clean side first (SPEC §4).

    feature kernel:  P = Aᵀ Z~ (C×d),              S = X~ Pᵀ
    gradient kernel: G_c = Σ_j A_jc F_j ⊗ Z~_j (C×k×d),  S_ic = E_iᵀ G_c X~_i
    """
    acc = problem.acc_dtype
    B, C = problem.batch_size, problem.num_classes
    S = torch.zeros(B, C, dtype=acc, device=problem.device)
    for layer, proto in zip(problem.layers, _clean_prototypes(problem)):
        x = _feature_side(layer.x, layer.mu, problem.cosine, acc)
        if layer.e is None:
            S += x @ proto.T
        else:
            S += torch.einsum("ik,ckd,id->ic", _second_side(layer.e, problem.cosine, acc), proto, x)
    return S


def class_similarity(problem: Problem, strategy: str) -> torch.Tensor:
    if strategy == "prototype":
        return class_similarity_prototype(problem)
    return class_similarity_pairwise(problem)


# ---------------------------------------------------------------------------------------------
# SPEC §3.4: label-signed score with row shift
# ---------------------------------------------------------------------------------------------
def fbr_from_similarity(
    S: torch.Tensor, y: torch.Tensor, present: torch.Tensor, shift: str, alpha: float
) -> torch.Tensor:
    """d_i = (S_{i,y_i} − b_i) − alpha · Σ_{c ≠ y_i, present} (S_ic − b_i)   (SPEC §3.4).

    With ``C'`` present classes and the own class present, the competitor sum is
    ``Σ_{c ≠ y_i, present} S_ic − (C' − 1)·b_i``.  Rows whose own class is absent from the clean
    subset or out of range (reachable with ``on_missing_class="skip"`` or without value checks) get
    the neutral score 0.  Row shifts ``b_i``:
    ``"second"``: second-largest ``S_ic`` over present classes, own class included;
    ``"max"``: largest over present competitors; ``"mean"``: their mean; ``"none"``: 0.
    With fewer than two present classes there is no competitor and ``b_i = 0``.
    """
    B, C = S.shape
    yc = y.clamp(0, C - 1)[:, None]
    own = S.gather(1, yc).squeeze(1)
    n_comp = present.sum().to(S.dtype) - 1  # C' − 1 competitors of a row whose own class is present
    comp_sum = S.masked_fill(~present, 0).sum(dim=1) - own
    if shift == "none":
        b = torch.zeros_like(own)
    elif shift == "mean":
        b = comp_sum / n_comp.clamp_min(1)
    else:
        ranked = S.masked_fill(~present, float("-inf"))
        if shift == "max":
            b = ranked.scatter(1, yc, float("-inf")).amax(dim=1)
        else:  # "second"
            b = torch.topk(ranked, k=min(2, C), dim=1).values[:, -1]
        b = b.nan_to_num(nan=float("nan"), posinf=float("inf"), neginf=0.0)  # no competitor: no shift
    d = own - b
    if alpha != 0:
        d = d - alpha * (comp_sum - n_comp * b)
    valid = (y >= 0) & (y < C) & present[yc.squeeze(1)]
    return torch.where(valid, d, torch.zeros_like(d))


# ---------------------------------------------------------------------------------------------
# SPEC §3.6–3.7: weight rules and the weighted loss
# ---------------------------------------------------------------------------------------------
def normalized_update(r: torch.Tensor, normalize_update: str, eps: float) -> torch.Tensor:
    if normalize_update == "none" or r.numel() == 0:
        return r
    return r / (r.abs().mean() + eps)


def reweighter_update(w_batch: torch.Tensor, r: torch.Tensor, lr: float, normalize_update: str, eps: float) -> torch.Tensor:
    """clip(w + lr · r^, 0, 1) for the batch's current weights."""
    return (w_batch + lr * normalized_update(r, normalize_update, eps)).clamp(0.0, 1.0)


def threshold_weights(r: torch.Tensor) -> torch.Tensor:
    """The published per-batch rule (SPEC §3.6), without host synchronisation."""
    neg = r < 0
    inf = r.new_full((), float("inf"))  # filled on the device: no host-to-device copy per call
    min_neg_abs = torch.where(neg, r.abs(), inf).amin() if r.numel() else inf
    eta = 0.5 / min_neg_abs  # 0 when there is no negative score
    w = (0.5 + eta * r).clamp(0.0, 1.0)
    w = torch.where(w <= 0.5, torch.zeros_like(w), w)
    return torch.where(neg.any(), w, torch.ones_like(w))


def stateless_weights(r: torch.Tensor) -> torch.Tensor:
    """w_i = max(r_i, 0) / mean(max(r, 0)); all zeros when no score is positive."""
    pos = r.clamp_min(0)
    if r.numel() == 0:
        return pos
    m = pos.mean()
    return torch.where(m > 0, pos / torch.where(m > 0, m, torch.ones_like(m)), torch.zeros_like(pos))


def weighted_loss(losses: torch.Tensor, w: torch.Tensor, reduction: str, eps: float) -> torch.Tensor:
    """``Σ w_i l_i / max(Σ w_i, eps)`` (``"weight_sum"``) or ``Σ w_i l_i / B`` (``"batch"``).

    Weights without gradient (the usual case: they come from scores of detached features) are
    normalised first and contracted with the losses by one ``dot``, whose backward is a single
    scaled copy — this is on every training step's critical path, where the literal form's three
    autograd nodes cost more than the loss itself for small models.  Weights that require grad
    (e.g. differentiated through, as in Learning to Reweight) keep the literal form."""
    w = w.to(losses.dtype)
    if not w.requires_grad:
        if reduction == "batch":
            coef = w / max(losses.shape[0], 1)
        else:
            coef = w / w.sum().clamp_min(eps)
        return torch.dot(losses, coef)
    total = (w * losses).sum()
    if reduction == "batch":
        return total / max(losses.shape[0], 1)
    return total / w.sum().clamp_min(eps)
