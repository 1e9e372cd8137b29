"""Spectral-shrinkage whitening of the features FBR scores, its strength chosen on the clean subset.

Two users: ``fastreweight.label_issues.score_dataset(whiten=...)`` (the covariance of the rows being
scored, applied to every chunk) and ``train(feature_whiten=...)`` (the covariance of the cached clean
features, folded into the class means: ``shrunk_class_means`` at the end of this module).

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
its true label (a positive) and once with each other present class (negatives) — and the
candidate whose scores separate the two groups best (AUROC, the Mann–Whitney statistic, ties counted half) wins; ties go to the
plain features, then to the larger ``t``.  It uses trusted labels only, never the noisy ones.  The
leave-one-out similarity is closed-form: removing row ``i`` from its class ``y`` moves that class
mean by ``δ = (μ_y − z_i)/(n_y − 1)`` and the class-balanced centre by ``δ/C'``, so all M rows cost
one M×d by d×C product and a few row dot products per candidate.  Rows that are alone in their class
are left out of the criterion (without them the class would vanish).  The criterion uses the linear
kernel with the requested centering and row shift; ``normalize="cosine"`` is applied at scoring time
but not reflected in the choice.

Cost: one extra streamed pass over the N rows for μ and Σ (N·d² multiply-adds, float32 for float32
rows, summed in float64), one
symmetric eigendecomposition of a d×d matrix, and N·d² more for the transform when scoring.  Extra
memory: about 4·d²·8 bytes (Σ, its eigenvectors, the float32 transform and workspace), and for
``"auto"`` the criterion's temporaries: at most about eight float64 arrays of ``max(2^20, M·max(d, C))``
elements (candidates are batched only below that size).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import validate as V


#: Candidate strengths t = τ/λ₁ tried by ``whiten="auto"`` (geometric, from nearly full whitening to
#: nearly the plain inner product).
AUTO_STRENGTHS = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)


@dataclass
class Whitening:
    """The fitted map ``z = (x − mean) @ matrix`` (``matrix`` is ``V·diag((λ + t·λ₁)^(-1/2))``)."""

    mean: torch.Tensor  # d, float64
    matrix: torch.Tensor | None  # d×d, float64 (None: the plain features were chosen)
    strength: float | None  # t, or None for the plain features
    criterion: dict = field(default_factory=dict)  # candidate label -> leave-one-out AUROC ("auto" only)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            return x
        # in the rows' precision (float32 rows: a float32 subtraction and GEMM, no float64 copy)
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        return (x.to(work) - self.mean.to(work)) @ self.matrix.to(work)

    def folded_means(self, z: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per present class such that plain scoring with ``center="clean"`` against them
        equals scoring the mapped rows against the mapped clean rows: with ``A = W Wᵀ`` (W =
        ``matrix``), the class means ``m_c`` of ``z`` and their class-balanced mean ``cen``, the rows
        ``cen + A (m_c − cen)`` give ``S_ic = (x_i − cen)ᵀ A (m_c − cen)``, which is what the map
        gives (the centre maps to the centre; the mean ``μ`` cancels).  The batch side is then used
        as it is: no d×d product per scored row."""
        means, present = class_means(z, y, num_classes)
        cen = means.mean(dim=0)
        rows = cen + ((means - cen) @ self.matrix) @ self.matrix.T
        return rows.to(z.dtype), present

    def describe(self) -> dict:
        return {"strength": self.strength, "criterion": dict(self.criterion)}


def class_means(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(means of the present classes, float64, P×d; the present classes, ascending, int64)."""
    z64, y = z.to(torch.float64), y.to(torch.int64)
    counts = torch.bincount(y, minlength=num_classes)
    present = torch.nonzero(counts > 0).flatten()
    sums = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, y, z64)
    return sums[present] / counts[present, None].to(torch.float64), present


class StreamingMoments:
    """Mean and covariance of rows seen a chunk at a time (d + d² numbers of state, float64).

    Rows are shifted by the first chunk's mean before the products are summed, which keeps the
    cancellation in ``E[xxᵀ] − μμᵀ`` small for features far from the origin.  Each chunk's Gram
    matrix is formed in the chunk's own precision (float32 rows: a float32 GEMM, the bulk of the
    cost, half that of float64 on a CPU and far less on a GPU) and summed in float64.  Its rounding,
    about 1e-7 of the largest eigenvalue λ₁ per chunk, is far below the smallest shrinkage
    ``τ = 0.01·λ₁`` the whitening adds (with TF32 matmuls allowed on a GPU, about 1e-3·λ₁: still a
    tenth of it)."""

    def __init__(self):
        self.n = 0
        self.shift = None
        self.sum = None
        self.gram = None

    def update(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(work)
        if self.shift is None:  # kept in the work precision, so the shift added back is the one subtracted
            self.shift = x.mean(dim=0).to(torch.float64)
            self.sum = torch.zeros_like(self.shift)
            self.gram = self.shift.new_zeros(x.shape[1], x.shape[1])
        xs = x - self.shift.to(work)
        self.n += x.shape[0]
        self.sum += xs.sum(dim=0, dtype=torch.float64)
        self.gram += (xs.T @ xs).to(torch.float64)

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


def _auroc(pos: torch.Tensor, neg: torch.Tensor):
    """P(pos > neg) + ½·P(pos = neg) through average ranks (Mann–Whitney U); ``pos``/``neg`` 1-D, or
    K×n1 / K×n0 for K independent problems (a list of K floats then)."""
    batched = pos.dim() == 2
    pos, neg = (pos, neg) if batched else (pos[None], neg[None])
    n1, n0 = pos.shape[-1], neg.shape[-1]
    if n1 == 0 or n0 == 0:
        out = [float("nan")] * pos.shape[0]
        return out if batched else out[0]
    if pos.shape[0] * n1 * n0 <= 1 << 22:  # small: count the pairs directly (cheaper than ranking)
        p, n = pos[:, :, None], neg[:, None, :]
        u = (p > n).sum(dim=(1, 2)).to(torch.float64) + 0.5 * (p == n).sum(dim=(1, 2)).to(torch.float64)
        out = (u / (n1 * n0)).tolist()
        return out if batched else out[0]
    allv = torch.cat([pos, neg], dim=-1).to(torch.float64).contiguous()
    sorted_v = torch.sort(allv, dim=-1).values
    below = torch.searchsorted(sorted_v, allv, right=False)  # values strictly smaller
    upto = torch.searchsorted(sorted_v, allv, right=True)  # values smaller or equal
    ranks = (below + upto + 1).to(torch.float64) / 2  # 1-based average rank of the tie group
    u = ranks[:, :n1].sum(dim=-1) - n1 * (n1 + 1) / 2
    out = (u / (n1 * n0)).tolist()
    return out if batched else out[0]


def loo_similarity(z: torch.Tensor, y: torch.Tensor, num_classes: int, center: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leave-one-out class similarity of the clean rows (SPEC §3.1–3.3, linear kernel).

    ``z`` is M×d, or K×M×d for K candidate feature maps of the same rows at once.  Returns
    ``(S, keep, present)``: ``S[..., i, c]`` is row i's similarity to class c's mean computed without
    row i (centre and prototypes as ``center`` defines them), ``keep`` marks rows whose class keeps at
    least one other row, ``present`` the classes of the clean subset."""
    z = z.to(torch.float64)
    onehot = torch.nn.functional.one_hot(y, num_classes).to(torch.float64)  # M×C
    counts = onehot.sum(dim=0)
    present = counts > 0
    means = (onehot.T @ z) / counts.clamp_min(1)[:, None]  # (K×)C×d
    n_own = counts[y]
    keep = n_own >= 2
    delta = (means[..., y, :] - z) / (n_own - 1).clamp_min(1)[:, None]  # move of the own class mean
    delta = delta * keep[:, None]
    if center == "clean":
        cen = means[..., present, :].mean(dim=-2, keepdim=True)
        cen_rows = cen + delta / present.sum().to(torch.float64)
    else:
        cen_rows = torch.zeros_like(z)
    zt = z - cen_rows
    S = zt @ means.transpose(-1, -2) - (zt * cen_rows).sum(dim=-1, keepdim=True)
    S = S + onehot * (zt * delta).sum(dim=-1, keepdim=True)
    return S, keep, present


def all_label_scores(S: torch.Tensor, present: torch.Tensor, shift: str, alpha: float) -> torch.Tensor:
    """``D[i, c]``: the FBR score of SPEC §3.4 (``fbr_from_similarity``) that row i would get if its
    label were c, for every present class c at once (absent columns: NaN)."""
    n_comp = present.sum().to(S.dtype) - 1
    Sp = S.masked_fill(~present, float("-inf"))
    total = S.masked_fill(~present, 0).sum(dim=-1, keepdim=True)
    if shift == "none":
        b = torch.zeros_like(S)
    elif shift == "mean":
        b = (total - S) / n_comp.clamp_min(1)
    else:
        top = torch.topk(Sp, k=min(2, S.shape[-1]), dim=-1).values
        first = top[..., :1]
        second = top[..., -1:] if top.shape[-1] > 1 else torch.full_like(first, float("-inf"))
        if shift == "max":  # largest competitor: the top score, or the second for the top class itself
            b = torch.where(Sp == first, second, first)
            ties = (Sp == first).sum(dim=-1, keepdim=True) > 1  # a tie at the top: the other one competes
            b = torch.where(ties, first, b)
        else:  # "second": second largest over present classes, the own class included
            b = second.expand_as(S)
        b = b.nan_to_num(nan=float("nan"), posinf=float("inf"), neginf=0.0)
    D = S - b
    if alpha != 0:
        D = D - alpha * (total - S - n_comp * b)
    return D.masked_fill(~present, float("nan"))


def loo_auroc(z: torch.Tensor, y: torch.Tensor, num_classes: int, *, center: str, shift: str, alpha: float):
    """The criterion of ``whiten="auto"``: AUROC of leave-one-out FBR scores, true vs wrong labels
    (a float; a list of K floats for K×M×d candidates)."""
    S, keep, present = loo_similarity(z, y, num_classes, center)
    batched = S.dim() == 3
    S = S if batched else S[None]
    S, yk = S[:, keep], y[keep]
    if yk.numel() == 0 or int(present.sum()) < 2:
        out = [float("nan")] * S.shape[0]
    else:
        D = all_label_scores(S, present, shift, alpha)
        own = torch.nn.functional.one_hot(yk, num_classes).bool()
        neg_mask = ~own & present[None, :]
        out = _auroc(D[:, own], D[:, neg_mask])
    return out if batched else out[0]


#: Candidates are evaluated together while their K×M×max(d, C) working set stays below this many
#: elements (8 MiB per float64 temporary), one at a time beyond it.
_BATCH_ELEMS = 1 << 20


def _scaled_criterion(coords: torch.Tensor, scales: torch.Tensor, y: torch.Tensor, num_classes: int,
                      kw: dict) -> list:
    """``loo_auroc`` of ``coords · diag(scales[k])`` for every row k of ``scales`` (K×d): the candidates
    batched while the working set is small, one by one otherwise (bounded memory)."""
    K, (M, d) = scales.shape[0], coords.shape
    if K * M * max(d, num_classes) <= _BATCH_ELEMS:
        return loo_auroc(coords[None] * scales[:, None, :], y, num_classes, **kw)
    return [loo_auroc(coords * sk, y, num_classes, **kw) for sk in scales]


def _pick(criterion: dict, plain_auc: float, strengths, aucs) -> float | None:
    """The best candidate: the plain features unless a strength beats them; ties to the larger t."""
    criterion["plain"] = plain_auc
    best_t, best_auc = None, plain_auc
    for t, auc in zip(strengths, aucs):
        criterion[f"t={t:g}"] = auc
        if auc > best_auc or (np.isnan(best_auc) and not np.isnan(auc)):
            best_t, best_auc = t, auc
    return best_t


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
        return Whitening(mean=mean, matrix=whitening_matrix(evals, evecs, float(whiten)), strength=float(whiten))
    xc = clean_features.to(torch.float64)
    yc = clean_labels.to(torch.int64)
    kw = dict(center=center, shift=shift, alpha=alpha)
    coords = (xc - mean) @ evecs  # whitening with strength t scales these columns by (λ + t·λ₁)^(-1/2)
    scales = torch.stack([(evals + t * evals[0]).rsqrt() for t in AUTO_STRENGTHS])
    criterion: dict = {}
    plain_auc = _scaled_criterion(xc, torch.ones_like(xc[:1]), yc, num_classes, kw)[0]
    best = _pick(criterion, plain_auc, AUTO_STRENGTHS, _scaled_criterion(coords, scales, yc, num_classes, kw))
    if best is None:
        return Whitening(mean=mean, matrix=None, strength=None, criterion=criterion)
    return Whitening(mean=mean, matrix=whitening_matrix(evals, evecs, best), strength=best, criterion=criterion)


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


# ---------------------------------------------------------------------------------------------
# Whitening folded into the class means (training loops: no per-step cost)
# ---------------------------------------------------------------------------------------------
@dataclass
class ShrunkMeans:
    """One row per present class; plain scoring against them (``center="clean"``) is whitened scoring."""

    rows: torch.Tensor  # P×d, the dtype of the clean features
    labels: torch.Tensor  # P, int64: the present classes, ascending
    strength: float | None  # t, or None: the plain class means were chosen
    criterion: dict = field(default_factory=dict)
    # the fold: rows = means − (((means − cen) @ basis) · shrink) @ basisᵀ (None: the plain means)
    basis: torch.Tensor | None = None  # d×r float64, orthonormal columns (the clean rows' span)
    shrink: torch.Tensor | None = None  # r float64, λ/(λ + t·λ₁)

    def refold(self, clean_features: torch.Tensor, clean_labels: torch.Tensor, num_classes: int) -> "ShrunkMeans":
        """The class means of new clean features shrunk by this fold (the spectrum and strength fitted
        earlier, not refitted): for a training loop that refits the whitening every few refreshes of
        its clean features (``train(feature_whiten_every=k)``).  The same labels' classes must be
        present (the result keeps ``labels``); O(M·d + P·d·r), no eigendecomposition, no criterion.
        With the features the fold was fitted on it gives ``rows`` back (to rounding)."""
        V.check_float_matrix("clean_features", clean_features)
        V.check_label_vector("clean_labels", clean_labels, clean_features.shape[0])
        V.check_same_device({"clean_features": clean_features, "clean_labels": clean_labels, "rows": self.rows})
        if self.basis is not None and clean_features.shape[1] != self.basis.shape[0]:
            raise ValueError(f"clean_features must have {self.basis.shape[0]} columns (the fitted features' size), "
                             f"got shape {tuple(clean_features.shape)}")
        if V.check_num_classes(num_classes) is None:
            raise TypeError("num_classes must be a positive int, got None")
        if clean_features.shape[0] == 0:
            raise ValueError("clean_features is empty: the clean subset needs at least one row")
        means, present = class_means(clean_features, clean_labels, num_classes)
        if self.basis is not None:
            cen = means.mean(dim=0)
            means = means - (((means - cen) @ self.basis) * self.shrink) @ self.basis.T
        rows = means.to(clean_features.dtype)
        if present.shape != self.labels.shape:
            raise ValueError(f"clean_labels must hold the {self.labels.shape[0]} classes the fold was fitted on, "
                             f"got {present.shape[0]}")
        return ShrunkMeans(rows=rows, labels=self.labels, strength=self.strength,
                           criterion=self.criterion, basis=self.basis, shrink=self.shrink)


def shrunk_class_means(
    clean_features: torch.Tensor,
    clean_labels: torch.Tensor,
    num_classes: int,
    *,
    whiten: str | float,
    shift: str = "max",
    alpha: float = 0.0,
    check_values: bool = True,
) -> ShrunkMeans:
    """Whitening by the clean rows' own covariance, folded into their class means.

    ``clean_features`` M×d float (M ≥ 1), ``clean_labels`` M integers in ``[0, num_classes)``, on one
    device; ``whiten`` ``"auto"`` or a strength ``t > 0``.  ``check_values`` adds the data-dependent
    checks (finite features, labels in range: one host synchronisation).

    With ``Σ = V diag(λ) Vᵀ`` the covariance of the M clean rows (rank r < min(M, d): computed from
    the smaller Gram matrix, M×M or d×d, O(M·d·min(M, d) + min(M, d)³)), ``τ = t·λ₁``, the class means ``m_c`` and their class-balanced mean
    ``cen``, the rows

        m'_c = cen + τ (Σ + τI)⁻¹ (m_c − cen) = m_c − V diag(λ/(λ + τ)) Vᵀ (m_c − cen)

    make the plain centred score of any batch row ``x`` equal to ``τ`` times its score under the
    whitening of the module doc (``S_ic = (x − cen)ᵀ τ(Σ + τI)⁻¹ (m_c − cen)``), for every row shift and
    ``alpha`` (they act on ``S``, which is only scaled).  The factor ``τ`` keeps scores on the plain
    scale: ``t → ∞`` gives back the plain class means.  So a training loop that scores every batch
    against cached clean features pays for the whitening once per refresh — the batch side is
    untouched.  ``whiten="auto"`` picks ``t`` (or the plain means) by the leave-one-out criterion of
    the module doc, computed in the r coordinates of the clean rows' span."""
    V.check_float_matrix("clean_features", clean_features)
    V.check_label_vector("clean_labels", clean_labels, clean_features.shape[0])
    V.check_same_device({"clean_features": clean_features, "clean_labels": clean_labels})
    if V.check_num_classes(num_classes) is None:
        raise TypeError("num_classes must be a positive int, got None")
    whiten = check_whiten(whiten)
    if whiten is None:
        raise ValueError("whiten must be 'auto' or a positive number here (None means no whitening: use the plain means)")
    V.check_option("shift", shift, V.SHIFT_OPTIONS)
    alpha = V.check_alpha(alpha)
    if clean_features.shape[0] == 0:
        raise ValueError("clean_features is empty: the clean subset needs at least one row")
    if check_values:
        vc = V.ValueChecks()
        vc.finite("clean_features", clean_features)
        vc.labels_in_range("clean_labels", clean_labels, num_classes)
        vc.run()
    z = clean_features.detach().to(torch.float64)
    y = clean_labels.to(torch.int64)
    M = z.shape[0]
    means, present = class_means(z, y, num_classes)
    cen = means.mean(dim=0)
    plain = ShrunkMeans(rows=means.to(clean_features.dtype), labels=present, strength=None)
    zc = z - z.mean(dim=0)
    # the spectrum of Σ from the smaller of the two Gram matrices: M×M (zc zcᵀ) or d×d (zcᵀ zc = M·Σ)
    gram_rows = M <= z.shape[1]
    evals, evecs = torch.linalg.eigh(zc @ zc.T / M if gram_rows else zc.T @ zc / M)
    evals, evecs = evals.flip(0), evecs.flip(1)
    if M < 2 or float(evals[0]) <= 0:
        return plain
    keep = evals > evals[0] * 1e-10
    lam = evals[keep]
    if gram_rows:
        basis = zc.T @ evecs[:, keep] / (M * lam).sqrt()  # orthonormal basis V of the rows' span
        coords = evecs[:, keep] * (M * lam).sqrt()  # zc in that basis
    else:
        basis = evecs[:, keep]
        coords = zc @ basis
    kw = dict(center="clean", shift=shift, alpha=alpha)
    criterion: dict = {}
    if whiten == "auto":
        # with center="clean" the plain features are the unscaled coordinates (a rotation and a
        # translation of the rows): every candidate in one batched call, the plain one first
        scales = torch.stack([torch.ones_like(lam)] + [(lam + t * lam[0]).rsqrt() for t in AUTO_STRENGTHS])
        aucs = _scaled_criterion(coords, scales, y, num_classes, kw)
        best_t = _pick(criterion, aucs[0], AUTO_STRENGTHS, aucs[1:])
    else:
        best_t = float(whiten)
    if best_t is None:
        plain.criterion = criterion
        return plain
    shrink = lam / (lam + best_t * lam[0])
    rows = means - (((means - cen) @ basis) * shrink) @ basis.T
    return ShrunkMeans(rows=rows.to(clean_features.dtype), labels=present, strength=best_t, criterion=criterion,
                       basis=basis, shrink=shrink)
