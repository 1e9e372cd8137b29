"""Spectral-shrinkage whitening for dataset-scale scoring, its strength chosen on the clean subset.

The FBR score of SPEC §3 uses the plain inner product of (centred) features.  On raw features a few
high-variance directions — shared by every class — dominate that inner product.  ``fastreweight
score --whiten`` first maps every feature row through

    z = diag((λ + τ)^(-1/2)) Vᵀ (x − μ),        Σ = V diag(λ) Vᵀ,   τ = t·λ₁,

where ``μ`` and ``Σ`` are the mean and covariance of the N rows being scored (their labels are not
used).  The inner product of two ``z`` is the Mahalanobis-type product ``(x − μ)ᵀ (Σ + τI)⁻¹ (x' − μ)``:
directions of large variance are damped, and ``τ`` stops the directions where ``Σ`` is tiny — where
class means estimated from a few clean rows are mostly noise — from being blown up.  ``t → ∞`` gives
back the plain inner product (up to a constant factor), ``t → 0`` full whitening.  The rest of the
scoring (centering, class similarity, row shift) is unchanged and runs on ``z``.

Choosing ``t`` (``whiten="auto"``): the right strength depends on how many clean rows estimate each
class mean, so it is picked on the clean subset itself, by leave-one-out.  For every candidate (the
plain features included) each clean row is scored against class means that exclude it — once with
its true label (a positive) and once with each other present class (negatives; 16 of them, drawn
with a fixed seed, when there are more than 17 classes) — and the candidate whose scores separate
the two groups best (AUROC, the Mann–Whitney statistic, ties counted half) wins; ties go to the
plain features, then to the larger ``t``.  It uses trusted labels only, never the noisy ones.  The
leave-one-out similarity is closed-form: removing row ``i`` from its class ``y`` moves that class
mean by ``δ = (μ_y − z_i)/(n_y − 1)`` and the class-balanced centre by ``δ/C'``, so all M rows cost
one M×d by d×C product and a few row dot products per candidate.  Rows that are alone in their class
are left out of the criterion (without them the class would vanish).  The criterion uses the linear
kernel with the requested centering and row shift; ``normalize="cosine"`` is applied at scoring time
but not reflected in the choice.

Cost: one extra streamed pass over the N rows for μ and Σ (N·d² multiply-adds in float64), one
symmetric eigendecomposition of a d×d matrix, and N·d² more for the transform when scoring.  Extra
memory: about 4·d²·8 bytes (Σ, its eigenvectors, the float32 transform and workspace).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .reference import fbr_from_similarity

#: Candidate strengths t = τ/λ₁ tried by ``whiten="auto"`` (geometric, from nearly full whitening to
#: nearly the plain inner product).
AUTO_STRENGTHS = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
_MAX_NEGATIVE_CLASSES = 16


@dataclass
class Whitening:
    """The fitted map ``z = (x − mean) @ matrix`` (``matrix`` is ``V·diag((λ + t·λ₁)^(-1/2))``)."""

    mean: torch.Tensor  # d, float64
    matrix: torch.Tensor | None  # d×d, float32 (None: the plain features were chosen)
    strength: float | None  # t, or None for the plain features
    criterion: dict = field(default_factory=dict)  # candidate label -> leave-one-out AUROC ("auto" only)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            return x
        return (x.to(torch.float64) - self.mean).to(self.matrix.dtype) @ self.matrix

    def describe(self) -> dict:
        return {"strength": self.strength, "criterion": dict(self.criterion)}


class StreamingMoments:
    """Mean and covariance of rows seen a chunk at a time, in float64 (d + d² numbers of state).

    Rows are shifted by the first chunk's mean before the products are summed, which keeps the
    cancellation in ``E[xxᵀ] − μμᵀ`` small for features far from the origin."""

    def __init__(self):
        self.n = 0
        self.shift = None
        self.sum = None
        self.gram = None

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        if x.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = x.mean(dim=0)
            self.sum = torch.zeros_like(self.shift)
            self.gram = x.new_zeros(x.shape[1], x.shape[1])
        xs = x - self.shift
        self.n += x.shape[0]
        self.sum += xs.sum(dim=0)
        self.gram.addmm_(xs.T, xs)

    def finalize(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n == 0:
            raise ValueError("whitening needs at least one feature row")
        m = self.sum / self.n
        cov = self.gram / self.n - torch.outer(m, m)
        cov = 0.5 * (cov + cov.T)
        if not bool(torch.isfinite(cov).all()):
            raise ValueError("features contain NaN or Inf: whitening needs finite features")
        return self.shift + m, cov


def spectrum(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors of a symmetric PSD matrix."""
    evals, evecs = torch.linalg.eigh(cov)
    return evals.flip(0).clamp_min(0), evecs.flip(1)


def whitening_matrix(evals: torch.Tensor, evecs: torch.Tensor, strength: float) -> torch.Tensor:
    tau = strength * float(evals[0])
    return evecs * (evals + tau).rsqrt()[None, :]


def _auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(pos > neg) + ½·P(pos = neg), through average ranks (Mann–Whitney U)."""
    n1, n0 = pos.numel(), neg.numel()
    if n1 == 0 or n0 == 0:
        return float("nan")
    allv = torch.cat([pos, neg]).to(torch.float64)
    sorted_v, order = torch.sort(allv)
    _, counts = torch.unique_consecutive(sorted_v, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2  # 1-based average rank of each tie group
    ranks = torch.empty_like(allv)
    ranks[order] = torch.repeat_interleave(avg, counts)
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


def loo_similarity(z: torch.Tensor, y: torch.Tensor, num_classes: int, center: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leave-one-out class similarity of the clean rows (SPEC §3.1–3.3, linear kernel).

    Returns ``(S, keep, present)``: ``S[i, c]`` is row i's similarity to class c's mean computed
    without row i (centre and prototypes as ``center`` defines them), ``keep`` marks rows whose class
    keeps at least one other row, ``present`` the classes of the clean subset."""
    z = z.to(torch.float64)
    counts = torch.bincount(y, minlength=num_classes).to(torch.float64)
    present = counts > 0
    sums = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, y, z)
    means = sums / counts.clamp_min(1)[:, None]
    n_own = counts[y]
    keep = n_own >= 2
    delta = (means[y] - z) / (n_own - 1).clamp_min(1)[:, None]  # move of the own class mean
    delta = delta * keep[:, None]
    if center == "clean":
        cen = means[present].mean(dim=0)
        cen_rows = cen[None, :] + delta / present.sum().to(torch.float64)
    else:
        cen_rows = torch.zeros_like(z)
    zt = z - cen_rows
    S = zt @ means.T - (zt * cen_rows).sum(dim=1, keepdim=True)
    S = S + torch.nn.functional.one_hot(y, num_classes).to(torch.float64) * (zt * delta).sum(dim=1, keepdim=True)
    return S, keep, present


def loo_auroc(z: torch.Tensor, y: torch.Tensor, num_classes: int, *, center: str, shift: str, alpha: float) -> float:
    """The criterion of ``whiten="auto"``: AUROC of leave-one-out FBR scores, true vs wrong labels."""
    S, keep, present = loo_similarity(z, y, num_classes, center)
    S, yk = S[keep], y[keep]
    classes = torch.nonzero(present).flatten()
    n_cls = classes.numel()
    if yk.numel() == 0 or n_cls < 2:
        return float("nan")
    pos = fbr_from_similarity(S, yk, present, shift, alpha)
    slot = torch.searchsorted(classes, yk)  # position of each row's class among the present ones
    if n_cls - 1 <= _MAX_NEGATIVE_CLASSES:
        offsets = [torch.full_like(slot, k) for k in range(1, n_cls)]
    else:
        g = torch.Generator(device="cpu").manual_seed(0)
        offsets = [torch.randint(1, n_cls, slot.shape, generator=g).to(slot.device) for _ in range(_MAX_NEGATIVE_CLASSES)]
    neg = torch.cat([fbr_from_similarity(S, classes[(slot + off) % n_cls], present, shift, alpha) for off in offsets])
    return _auroc(pos, neg)


def fit_whitening(
    moments: StreamingMoments,
    clean_features: torch.Tensor,
    clean_labels: torch.Tensor,
    num_classes: int,
    *,
    whiten: str | float,
    center: str,
    shift: str,
    alpha: float,
) -> Whitening:
    """Fit the map from the streamed moments; ``whiten`` is a strength ``t > 0`` or ``"auto"``."""
    mean, cov = moments.finalize()
    evals, evecs = spectrum(cov)
    if float(evals[0]) <= 0:  # constant features: nothing to whiten
        return Whitening(mean=mean, matrix=None, strength=None)
    if whiten != "auto":
        return Whitening(mean=mean, matrix=whitening_matrix(evals, evecs, float(whiten)).to(torch.float32),
                         strength=float(whiten))
    xc = clean_features.to(torch.float64)
    yc = clean_labels.to(torch.int64)
    best_label, best_auc, best = "plain", loo_auroc(xc, yc, num_classes, center=center, shift=shift, alpha=alpha), None
    criterion = {"plain": best_auc}
    for t in AUTO_STRENGTHS:
        W = whitening_matrix(evals, evecs, t)
        auc = loo_auroc((xc - mean) @ W, yc, num_classes, center=center, shift=shift, alpha=alpha)
        criterion[f"t={t:g}"] = auc
        if auc > best_auc or (np.isnan(best_auc) and not np.isnan(auc)):
            best_label, best_auc, best = f"t={t:g}", auc, (t, W)
    if best is None:
        return Whitening(mean=mean, matrix=None, strength=None, criterion=criterion)
    return Whitening(mean=mean, matrix=best[1].to(torch.float32), strength=best[0], criterion=criterion)


def check_whiten(whiten) -> str | float | None:
    """``None``/``"none"`` (off), ``"auto"``, or a finite strength ``t > 0``."""
    if whiten is None or (isinstance(whiten, str) and whiten == "none"):
        return None
    if isinstance(whiten, str):
        if whiten == "auto":
            return "auto"
        try:
            whiten = float(whiten)
        except ValueError:
            raise ValueError(f"whiten must be None, 'none', 'auto' or a positive number, got {whiten!r}") from None
    if isinstance(whiten, bool) or not isinstance(whiten, (int, float)) or not np.isfinite(whiten) or whiten <= 0:
        raise ValueError(f"whiten must be None, 'none', 'auto' or a positive number, got {whiten!r}")
    return float(whiten)
