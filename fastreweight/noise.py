"""Label-noise generators: class-conditional and instance-dependent.

Every generator takes the TRUE labels ``y`` (``N`` integers in ``[0, C)``) and a rate ``r`` in
``[0, 1)``, flips **exactly** ``k = round(r·N)`` samples (never to their own class) and returns a new
int64 numpy array of noisy labels ``ỹ``; so the realised noise rate ``mean(ỹ != y)`` is ``k/N``,
within half a sample of ``r``.  Results are deterministic given ``seed``.  Features may be numpy
arrays or torch tensors; rows beyond 2-D (images) are flattened.

Kinds (``make_noise(kind, ...)``; ``NOISE_KINDS`` lists them):

* ``"sym"`` -- ``symmetric_noise``: ``k`` samples drawn uniformly, each relabelled uniformly over the
  ``C-1`` other classes.  Independent of the sample.
* ``"asym"`` / ``"pair"`` -- ``pair_noise``: ``k`` samples, spread over the classes in proportion to
  their sizes, relabelled ``c -> m(c)`` (default ``m(c) = (c+1) mod C``).  Depends on the class only.
* ``"confusion"`` -- ``confusion_noise``: a classifier fitted on the true labels (out of fold); a
  sample is flipped to the class it most resembles, with probability growing with that resemblance.
* ``"boundary"`` -- ``boundary_noise``: the samples nearest a class boundary (smallest margin between
  own and nearest other class mean in a whitened space) are flipped to the nearer other class.
* ``"cluster"`` -- ``cluster_noise``: k-means clusters within each class are flipped as wholes to the
  class nearest their centroid (an annotator's systematic habit), most confusable clusters first.

The three instance-dependent kinds share one feature space (``embed``): features standardised per
column, projected on their top ``pca_dim`` principal components, then whitened by the pooled
within-class covariance (shrunk toward a multiple of the identity).  See ``docs/noise.md``.

``fastreweight.data.inject_noise`` / ``make_split`` / ``make_data`` accept ``"confusion"``,
``"boundary"`` and ``"cluster"`` and call these.  Their ``"sym"`` / ``"asym"`` / ``"pair"`` are the
historical SPEC §6 definitions (``data.symmetric_noise`` relabels over all ``C`` classes, so about
``1/C`` of its relabels are right; ``data.asymmetric_noise`` rounds per class), kept bit for bit;
the ``"sym"`` / ``"pair"`` here are the exact-rate versions.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from typing import Callable, Mapping

import numpy as np

__all__ = [
    "symmetric_noise", "pair_noise", "confusion_noise", "boundary_noise", "cluster_noise",
    "make_noise", "NOISE_KINDS", "INSTANCE_KINDS",
    "embed", "out_of_fold_proba", "class_margins", "class_clusters", "noise_count",
]


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------
def _check_int(value, name: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_real(value, name: str, *, low: float | None = None, low_open: bool = False,
                allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    return value


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate must be a real number in [0, 1), got {type(rate).__name__} {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:  # also rejects NaN
        raise ValueError(f"rate must lie in [0, 1), got {rate!r}")
    return rate


def _to_numpy(a):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        torch = None
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.dtype == torch.bfloat16 or a.dtype == torch.float16:
            a = a.float()
        return a.numpy()
    return np.asarray(a)


def _check_labels(labels, num_classes: int) -> np.ndarray:
    y = _to_numpy(labels)
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y.astype(np.int64)


def _check_features(features, n: int) -> np.ndarray:
    x = _to_numpy(features)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
                                 or x.dtype == np.bool_):
        raise TypeError(f"features must be a real numeric array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"features must have one row per sample (2-D, or N×... images), got shape {tuple(x.shape)}")
    if x.shape[0] != n:
        raise ValueError(f"features has {x.shape[0]} rows but labels has {n} entries")
    x = x.reshape(n, -1).astype(np.float64)
    if x.shape[1] == 0:
        raise ValueError("features must have at least one column")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"features must be finite; {bad} row(s) hold NaN or inf")
    return x


def _single_threaded():
    """BLAS/OpenMP limited to one thread while a generator runs: the results then do not depend on the
    machine's thread count, and small problems avoid oversubscription on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def _one_thread(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _single_threaded():
            return fn(*args, **kwargs)
    return wrapper


def _common(labels, rate, num_classes, seed) -> tuple[np.ndarray, int, int, np.random.Generator]:
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    y = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    seed = _check_int(seed, "seed", minimum=0)
    return y, num_classes, noise_count(rate, len(y)), np.random.default_rng(seed)


def noise_count(rate: float, n: int) -> int:
    """The number of samples every generator flips: ``round(rate·n)`` (Python rounding)."""
    return int(round(float(rate) * int(n)))


def _gumbel_top_k(log_w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices drawn without replacement with probabilities ∝ ``exp(log_w)`` (successive
    sampling, Plackett–Luce), by the Gumbel-top-k trick: the ``k`` largest ``log_w + G``, ``G`` iid
    standard Gumbel.  ``log_w = -inf`` entries come last (in random order)."""
    g = rng.gumbel(size=len(log_w))
    keys = np.where(np.isfinite(log_w), log_w + g, -np.inf)
    # sort by key, then by g among -inf keys (lexsort: last key is primary)
    order = np.lexsort((-g, -keys))
    return np.sort(order[:k])


# ---------------------------------------------------------------------------------------------
# the feature space
# ---------------------------------------------------------------------------------------------
def embed(features, labels, *, num_classes: int, pca_dim: int = 50, shrinkage: float = 0.1,
          whiten: bool = True) -> np.ndarray:
    r"""The feature space of the instance-dependent kinds.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, ...)
        One row per sample (flattened).
    labels : array_like of int, shape (N,)
        True labels, used only for the within-class covariance when ``whiten``.
    num_classes : int
    pca_dim : int, default 50
        Number of principal components kept (at most ``min(N - 1, d)``).
    shrinkage : float in [0, 1], default 0.1
        Weight ``λ`` of the identity in the shrunk within-class covariance.
    whiten : bool, default True

    Returns
    -------
    z : ndarray of float64, shape (N, p)

    Notes
    -----
    With ``x̃ = (x - mean) / std`` per column (constant columns become 0) and ``V_p`` the top ``p``
    eigenvectors of ``x̃ᵀx̃ / N``, ``u = x̃ V_p``.  With ``S_w = (1/N) Σ_i (u_i - μ_{y_i})(u_i - μ_{y_i})ᵀ``
    (``μ_c`` the class means of ``u``) and ``S = (1-λ) S_w + λ (tr S_w / p) I = Q Λ Qᵀ``,
    ``z = u Q Λ^{-1/2}``: Euclidean distances in ``z`` are Mahalanobis distances under the pooled
    class covariance, the distances of linear discriminant analysis.
    """
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    y = _check_labels(labels, num_classes)
    x = _check_features(features, len(y))
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    shrinkage = _check_real(shrinkage, "shrinkage", low=0.0)
    if shrinkage > 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    return _embed(x, y, num_classes, pca_dim, shrinkage, bool(whiten))


@_one_thread
def _embed(x: np.ndarray, y: np.ndarray, C: int, pca_dim: int, shrinkage: float, whiten: bool) -> np.ndarray:
    n, d = x.shape
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    xs = (x - mu) / np.where(sd > 1e-12, sd, 1.0)
    xs[:, sd <= 1e-12] = 0.0
    p = max(1, min(pca_dim, d, n - 1))
    if d <= n:
        evals, evecs = np.linalg.eigh(xs.T @ xs / n)
        top = np.argsort(evals)[::-1][:p]
        u = xs @ evecs[:, top]
    else:  # fewer samples than columns: the Gram matrix is the smaller eigenproblem
        evals, evecs = np.linalg.eigh(xs @ xs.T / n)
        top = np.argsort(evals)[::-1][:p]
        u = evecs[:, top] * np.sqrt(np.maximum(evals[top], 0.0) * n)
    if not whiten:
        return u
    means = _class_means(u, y, C)
    r = u - means[y]
    sw = r.T @ r / n
    tr = np.trace(sw) / sw.shape[0]
    if tr <= 1e-12:  # every sample sits on its class mean
        return u
    s = (1.0 - shrinkage) * sw + shrinkage * tr * np.eye(sw.shape[0])
    lam, q = np.linalg.eigh(s)
    lam = np.maximum(lam, 1e-12 * tr)
    return u @ (q / np.sqrt(lam))


def _class_means(z: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    """Class means (rows of absent classes are NaN)."""
    counts = np.bincount(y, minlength=C).astype(np.float64)
    sums = np.zeros((C, z.shape[1]))
    np.add.at(sums, y, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _distances(z: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Euclidean distances ``N×C``; +inf for absent classes (NaN means)."""
    d2 = (z * z).sum(1)[:, None] - 2.0 * z @ np.nan_to_num(means).T + (np.nan_to_num(means) ** 2).sum(1)[None, :]
    d = np.sqrt(np.maximum(d2, 0.0))
    d[:, np.isnan(means).any(axis=1)] = np.inf
    return d


def _need_two_classes(y: np.ndarray) -> None:
    if len(np.unique(y)) < 2:
        raise ValueError("labels must contain at least two distinct classes for instance-dependent noise")


# ---------------------------------------------------------------------------------------------
# class-conditional kinds
# ---------------------------------------------------------------------------------------------
def symmetric_noise(labels, rate: float, *, num_classes: int, seed: int = 0) -> np.ndarray:
    r"""Uniform label noise at an exact rate.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        True labels in ``[0, num_classes)``.
    rate : float in [0, 1)
        Fraction of samples to flip.
    num_classes : int
        Number of classes ``C >= 2``.
    seed : int, default 0

    Returns
    -------
    ndarray of int64, shape (N,)
        Noisy labels; exactly ``k = round(rate·N)`` differ from ``labels``.

    Notes
    -----
    A uniformly random subset ``F`` of size ``k`` is flipped, ``ỹ_i = (y_i + s_i) mod C`` with
    ``s_i ~ U{1, …, C-1}`` for ``i ∈ F``: ``P(ỹ = j | y = c, x) = (k/N)/(C-1)`` for ``j ≠ c``,
    independent of ``x`` and ``c``.  (``fastreweight.data.symmetric_noise`` is the SPEC §6 variant that
    relabels over all ``C`` classes.)
    """
    y, C, k, rng = _common(labels, rate, num_classes, seed)
    chosen = rng.permutation(len(y))[:k]
    out = y.copy()
    out[chosen] = (y[chosen] + rng.integers(1, C, size=k)) % C
    return out


def _largest_remainder(k: int, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer quotas summing to ``k``, proportional to ``sizes`` and capped by them (largest remainder,
    ties at random)."""
    total = sizes.sum()
    exact = k * sizes / total
    quota = np.minimum(np.floor(exact).astype(np.int64), sizes)
    rem = exact - quota
    while quota.sum() < k:
        room = quota < sizes
        order = np.lexsort((rng.random(len(sizes)), -np.where(room, rem, -np.inf)))
        for c in order[: k - quota.sum()]:
            if quota[c] < sizes[c]:
                quota[c] += 1
        rem = np.zeros_like(rem)
    return quota


def pair_noise(labels, rate: float, *, num_classes: int, seed: int = 0,
               class_map: Mapping[int, int] | None = None) -> np.ndarray:
    r"""Class-conditional ("asymmetric", pair-flip) noise at an exact rate.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
    rate : float in [0, 1)
        Fraction of ALL samples to flip.
    num_classes : int
    seed : int, default 0
    class_map : mapping int -> int, optional
        Flip target of each class; default ``c -> (c + 1) mod C``.  Classes mapped to themselves (or
        missing) are never flipped.

    Returns
    -------
    ndarray of int64, shape (N,)
        Exactly ``k = round(rate·N)`` labels differ.

    Raises
    ------
    ValueError
        If ``k`` exceeds the number of samples in flippable classes.

    Notes
    -----
    With ``E`` the flippable classes, class ``c ∈ E`` gets the quota ``k_c`` of the largest-remainder
    apportionment of ``k`` over ``E`` by class sizes ``n_c`` (``k_c ≈ k·n_c / Σ_E n_{c'}``, ``Σ k_c = k``);
    ``k_c`` random members of ``c`` get ``m(c)``: ``P(ỹ = m(c) | y = c) ≈ k / Σ_E n_{c'}``.
    """
    y, C, k, rng = _common(labels, rate, num_classes, seed)
    if class_map is None:
        cmap = {c: (c + 1) % C for c in range(C)}
    else:
        if not isinstance(class_map, Mapping):
            raise TypeError(f"class_map must be a mapping class -> class, got {type(class_map).__name__}")
        cmap = {}
        for s, t in class_map.items():
            s, t = _check_int(s, "class_map key"), _check_int(t, "class_map value")
            if not (0 <= s < C and 0 <= t < C):
                raise ValueError(f"class_map entry {s} -> {t} out of range for num_classes={C}")
            cmap[s] = t
    movable = np.array([cmap.get(c, c) != c for c in range(C)])
    sizes = np.where(movable, np.bincount(y, minlength=C), 0)
    if k > sizes.sum():
        raise ValueError(f"rate={rate} asks for {k} flips but only {int(sizes.sum())} samples are in classes "
                         f"that class_map moves")
    out = y.copy()
    if k == 0:
        return out
    quota = _largest_remainder(k, sizes, rng)
    target = np.array([cmap.get(c, c) for c in range(C)])
    for c in range(C):
        if quota[c]:
            members = rng.permutation(np.flatnonzero(y == c))[: quota[c]]
            out[members] = target[c]
    return out


# ---------------------------------------------------------------------------------------------
# confusion noise
# ---------------------------------------------------------------------------------------------
_MODELS = ("logistic", "ncm")


def _folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified fold ids: each class's members in random order, dealt round-robin from a random fold."""
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (np.arange(len(members)) + rng.integers(n_folds)) % n_folds
    return fold


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = np.max(logits, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def _fit_predict_logits(model: str, z_tr, y_tr, z_te, C: int, max_iter: int) -> np.ndarray:
    present = np.unique(y_tr)
    logits = np.full((len(z_te), C), -np.inf)
    if len(present) == 1:
        logits[:, present[0]] = 0.0
        return logits
    if model == "ncm":
        means = _class_means(z_tr, y_tr, C)
        r = z_tr - means[y_tr]
        var = max(float((r * r).sum() / max(len(z_tr) - len(present), 1) / z_tr.shape[1]), 1e-12)
        d = _distances(z_te, means)
        logits = -(d ** 2) / (2.0 * var)
        return logits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=max_iter, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(z_tr, y_tr)
    dec = clf.decision_function(z_te)
    if dec.ndim == 1:  # two classes: p(classes_[1]) = sigmoid(dec)
        dec = np.stack([np.zeros_like(dec), dec], axis=1)
    logits[:, clf.classes_] = dec
    return logits


def out_of_fold_proba(features, labels, *, num_classes: int, model: str = "logistic", n_folds: int = 5,
                      pca_dim: int = 50, max_iter: int = 300, seed: int = 0, log: bool = False) -> np.ndarray:
    r"""Out-of-fold class probabilities from a classifier fitted on the TRUE labels.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, ...)
    labels : array_like of int, shape (N,)
    num_classes : int
    model : {"logistic", "ncm"}, default "logistic"
        ``"logistic"``: multinomial logistic regression (L2, ``C=1``, L-BFGS, ``max_iter`` iterations)
        on ``z = embed(features, whiten=False)`` scaled to unit variance per component;
        ``"ncm"``: nearest class mean, ``p(c|x) ∝ exp(-‖z - μ_c‖² / 2σ²)`` in the whitened ``embed``
        space, ``σ²`` the pooled within-class variance per dimension of the training folds.
    n_folds : int, default 5
        Stratified folds; each sample's probabilities come from the model fitted on the other folds.
    pca_dim : int, default 50
    max_iter : int, default 300
    seed : int, default 0
        Fold assignment.
    log : bool, default False
        Return log-probabilities (``-inf`` for classes absent from a training part).

    Returns
    -------
    ndarray of float64, shape (N, num_classes)
    """
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    y = _check_labels(labels, num_classes)
    x = _check_features(features, len(y))
    if model not in _MODELS:
        raise ValueError(f"model must be one of {', '.join(_MODELS)}, got {model!r}")
    n_folds = _check_int(n_folds, "n_folds", minimum=2)
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    max_iter = _check_int(max_iter, "max_iter", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    _need_two_classes(y)
    lp = _oof_log_proba(x, y, num_classes, model, n_folds, pca_dim, max_iter, np.random.default_rng(seed))
    return lp if log else np.exp(lp)


@_one_thread
def _oof_log_proba(x, y, C, model, n_folds, pca_dim, max_iter, rng) -> np.ndarray:
    if model == "ncm":
        z = _embed(x, y, C, pca_dim, 0.1, True)
    else:
        z = _embed(x, y, C, pca_dim, 0.0, False)
        z = z / np.maximum(z.std(axis=0), 1e-12)
    fold = _folds(y, min(n_folds, len(y)), rng)
    logits = np.empty((len(y), C))
    for f in range(fold.max() + 1):
        te = fold == f
        if not te.any():
            continue
        logits[te] = _fit_predict_logits(model, z[~te], y[~te], z[te], C, max_iter)
    return _log_softmax(logits)


def _other_argmax(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest score over classes ``≠ y`` and its class (lowest index on ties)."""
    s = scores.copy()
    s[np.arange(len(y)), y] = -np.inf
    t = s.argmax(axis=1)
    return t, s[np.arange(len(y)), t]


def confusion_noise(features, labels, rate: float, *, num_classes: int, seed: int = 0, temperature: float = 1.0,
                    model: str = "logistic", n_folds: int = 5, pca_dim: int = 50, max_iter: int = 300) -> np.ndarray:
    r"""Instance-dependent noise from a classifier's confusions: samples that look like another class
    get that class.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, ...)
    labels : array_like of int, shape (N,)
        True labels.
    rate : float in [0, 1)
    num_classes : int
    seed : int, default 0
        Folds and the draw of the flipped set.
    temperature : float > 0 or inf, default 1.0
        ``T → 0``: flip the ``k`` samples with the largest other-class probability; ``T = 1``: draw
        with weights ``p_other``; ``T = inf``: uniform choice (the targets stay the confusions).
    model, n_folds, pca_dim, max_iter
        The classifier, see ``out_of_fold_proba``.

    Returns
    -------
    ndarray of int64, shape (N,)
        Exactly ``k = round(rate·N)`` labels differ.

    Notes
    -----
    With ``p_i = out_of_fold_proba(x, y)_i`` (fitted without sample ``i``'s fold, so no sample is its
    own teacher), the target is the most probable other class and its probability the weight:

    .. math::  t_i = \arg\max_{c \ne y_i} p_{ic}, \qquad q_i = p_{i t_i}, \qquad w_i = q_i^{1/T}.

    The flipped set ``F`` (``|F| = k``) is drawn without replacement with probabilities ∝ ``w``
    (successive sampling: each next draw picks ``i`` with probability ``w_i / Σ_{j∉F} w_j``; done as
    the top ``k`` of ``log w_i + G_i``, ``G_i`` iid Gumbel) and ``ỹ_i = t_i`` for ``i ∈ F``.  The
    resulting noise transition ``P(ỹ | y, x)`` depends on ``x``: ambiguous samples (a 4 that looks
    like a 9) are the likely ones to be flipped, and to the class they resemble -- the pattern of
    human annotation noise (CIFAR-10N, Clothing1M).
    """
    y, C, k, rng = _common(labels, rate, num_classes, seed)
    x = _check_features(features, len(y))
    temperature = _check_real(temperature, "temperature", low=0.0, low_open=True, allow_inf=True)
    if model not in _MODELS:
        raise ValueError(f"model must be one of {', '.join(_MODELS)}, got {model!r}")
    n_folds = _check_int(n_folds, "n_folds", minimum=2)
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    max_iter = _check_int(max_iter, "max_iter", minimum=1)
    _need_two_classes(y)
    out = y.copy()
    if k == 0:
        return out
    lp = _oof_log_proba(x, y, C, model, n_folds, pca_dim, max_iter, rng)
    target, log_q = _other_argmax(lp, y)
    log_q = np.maximum(log_q, -1e300)  # an impossible target still gets a (vanishing) weight
    log_w = np.zeros_like(log_q) if math.isinf(temperature) else log_q / temperature
    chosen = _gumbel_top_k(log_w, k, rng)
    out[chosen] = target[chosen]
    return out


# ---------------------------------------------------------------------------------------------
# boundary noise
# ---------------------------------------------------------------------------------------------
def class_margins(features, labels, *, num_classes: int, pca_dim: int = 50,
                  shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    r"""Each sample's margin and nearest other class in the ``embed`` space.

    Returns
    -------
    margin : ndarray of float64, shape (N,)
        ``m_i = min_{c≠y_i} ‖z_i - μ_c‖ - ‖z_i - μ_{y_i}‖``: large inside the own class, near 0 on the
        boundary of the nearest-mean rule, negative past it.
    nearest : ndarray of int64, shape (N,)
        ``argmin_{c≠y_i} ‖z_i - μ_c‖``.
    """
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    y = _check_labels(labels, num_classes)
    x = _check_features(features, len(y))
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    shrinkage = _check_real(shrinkage, "shrinkage", low=0.0)
    if shrinkage > 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    _need_two_classes(y)
    return _margins(_embed(x, y, num_classes, pca_dim, shrinkage, True), y, num_classes)


def _margins(z, y, C):
    means = _class_means(z, y, C)
    d = _distances(z, means)
    nearest, neg = _other_argmax(-d, y)
    return -neg - d[np.arange(len(y)), y], nearest


def boundary_noise(features, labels, rate: float, *, num_classes: int, seed: int = 0, sharpness: float = 2.0,
                   pca_dim: int = 50, shrinkage: float = 0.1) -> np.ndarray:
    r"""Instance-dependent noise at class boundaries: the samples with the smallest margin between
    their own class mean and the nearest other class mean are flipped to that other class.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, ...)
    labels : array_like of int, shape (N,)
        True labels.
    rate : float in [0, 1)
    num_classes : int
    seed : int, default 0
    sharpness : float >= 0 or inf, default 2.0
        ``β`` below: ``inf`` flips exactly the ``k`` smallest margins (seeded tie-break), ``0`` a uniform
        random set; in between a soft preference for small margins.
    pca_dim, shrinkage
        The feature space, see ``embed``.

    Returns
    -------
    ndarray of int64, shape (N,)
        Exactly ``k = round(rate·N)`` labels differ.

    Notes
    -----
    In ``z = embed(x, y)`` (whitened by the pooled within-class covariance) with class means ``μ_c``,

    .. math::  m_i = \min_{c \ne y_i} \lVert z_i - \mu_c \rVert - \lVert z_i - \mu_{y_i} \rVert, \qquad
               t_i = \arg\min_{c \ne y_i} \lVert z_i - \mu_c \rVert.

    The flipped set ``F`` (``|F| = k``) is drawn without replacement with weights
    ``w_i = exp(-β m_i / s)``, ``s`` the standard deviation of the margins (so ``β`` has no units),
    and ``ỹ_i = t_i`` for ``i ∈ F``.  Unlike ``confusion_noise`` nothing is learned but class means:
    the noise is a geometric function of the sample's position between two classes.
    """
    y, C, k, rng = _common(labels, rate, num_classes, seed)
    x = _check_features(features, len(y))
    sharpness = _check_real(sharpness, "sharpness", low=0.0, allow_inf=True)
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    shrinkage = _check_real(shrinkage, "shrinkage", low=0.0)
    if shrinkage > 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    _need_two_classes(y)
    out = y.copy()
    if k == 0:
        return out
    margin, nearest = _margins(_embed(x, y, C, pca_dim, shrinkage, True), y, C)
    if math.isinf(sharpness):
        chosen = np.sort(np.lexsort((rng.random(len(y)), margin))[:k])
    else:
        s = float(margin.std()) or 1.0
        chosen = _gumbel_top_k(-sharpness * margin / s, k, rng)
    out[chosen] = nearest[chosen]
    return out


# ---------------------------------------------------------------------------------------------
# cluster noise
# ---------------------------------------------------------------------------------------------
def _min_size(n_c: int, clusters_per_class: int, min_cluster_size: int | None) -> int:
    if min_cluster_size is not None:
        return min_cluster_size
    return max(1, math.ceil(n_c / (4 * clusters_per_class)))


@_one_thread
def _clusters(z, y, C, clusters_per_class, seed, min_cluster_size=None):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    cluster = np.full(len(y), -1, np.int64)
    next_id = 0
    for c in range(C):
        members = np.flatnonzero(y == c)
        if not len(members):
            continue
        m = min(clusters_per_class, len(members))
        if m == 1:
            ids = np.zeros(len(members), np.int64)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                ids = KMeans(n_clusters=m, n_init=3, random_state=seed + c).fit_predict(z[members])
            # k-means isolates outliers in clusters of one or two: fold clusters below the minimum size
            # into the nearest kept centroid of the class
            sizes = np.bincount(ids, minlength=m)
            keep = sizes >= _min_size(len(members), clusters_per_class, min_cluster_size)
            if not keep.any():
                keep[sizes.argmax()] = True
            if not keep.all():
                kept = np.flatnonzero(keep)
                cents = np.stack([z[members[ids == g]].mean(0) for g in kept])
                drop = ~keep[ids]
                ids[drop] = kept[_distances(z[members[drop]], cents).argmin(1)]
        _, ids = np.unique(ids, return_inverse=True)  # dense ids (k-means may leave a cluster empty)
        cluster[members] = next_id + ids
        next_id += ids.max() + 1
    return cluster


def class_clusters(features, labels, *, num_classes: int, clusters_per_class: int = 8, seed: int = 0,
                   min_cluster_size: int | None = None, pca_dim: int = 50,
                   shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The within-class k-means clusters ``cluster_noise`` flips, with their targets and margins.

    Parameters are those of ``cluster_noise``.

    Returns
    -------
    cluster : ndarray of int64, shape (N,)
        Cluster id of each sample (ids ``0..G-1``, numbered class by class; a cluster holds one class).
    target : ndarray of int64, shape (G,)
        ``argmin_{c ≠ class(g)} ‖ḡ - μ_c‖``, ``ḡ`` the cluster's centroid.
    margin : ndarray of float64, shape (G,)
        ``min_{c ≠ class(g)} ‖ḡ - μ_c‖ - ‖ḡ - μ_{class(g)}‖``.
    """
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    y = _check_labels(labels, num_classes)
    x = _check_features(features, len(y))
    clusters_per_class = _check_int(clusters_per_class, "clusters_per_class", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    if min_cluster_size is not None:
        min_cluster_size = _check_int(min_cluster_size, "min_cluster_size", minimum=1)
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    shrinkage = _check_real(shrinkage, "shrinkage", low=0.0)
    if shrinkage > 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    _need_two_classes(y)
    z = _embed(x, y, num_classes, pca_dim, shrinkage, True)
    return _cluster_summary(z, y, num_classes, clusters_per_class, seed, min_cluster_size)


def _cluster_summary(z, y, C, clusters_per_class, seed, min_cluster_size=None):
    cluster = _clusters(z, y, C, clusters_per_class, seed, min_cluster_size)
    G = int(cluster.max()) + 1
    cls = np.zeros(G, np.int64)
    cls[cluster] = y
    centroids = _class_means(z, cluster, G)
    target, margin = _other_argmax(-_distances(centroids, _class_means(z, y, C)), cls)
    own = _distances(centroids, _class_means(z, y, C))[np.arange(G), cls]
    return cluster, target, -margin - own


def cluster_noise(features, labels, rate: float, *, num_classes: int, seed: int = 0, clusters_per_class: int = 8,
                  min_cluster_size: int | None = None, pca_dim: int = 50, shrinkage: float = 0.1) -> np.ndarray:
    r"""Instance-dependent noise in groups: whole within-class clusters are relabelled to the class
    their centroid is nearest to (an annotator's systematic confusion of one kind of sample).

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, ...)
    labels : array_like of int, shape (N,)
        True labels.
    rate : float in [0, 1)
    num_classes : int
    seed : int, default 0
        k-means initialisation (``random_state = seed + class``) and tie-breaks.
    clusters_per_class : int, default 8
        ``K`` below (fewer for classes with fewer samples).
    min_cluster_size : int, optional
        Clusters smaller than this are folded into the nearest larger cluster of their class (k-means
        gives outliers clusters of their own); default ``⌈n_c / 4K⌉``, a quarter of the mean size.
    pca_dim, shrinkage
        The feature space, see ``embed``.

    Returns
    -------
    ndarray of int64, shape (N,)
        Exactly ``k = round(rate·N)`` labels differ.

    Notes
    -----
    In ``z = embed(x, y)``, each class ``c`` is split into ``K`` clusters by k-means (sklearn
    ``KMeans``, 3 initialisations; clusters under ``min_cluster_size`` joined to the nearest kept
    centroid).  Cluster ``g`` of class ``c`` with centroid ``ḡ`` gets the target
    and margin

    .. math::  t_g = \arg\min_{c' \ne c} \lVert \bar g - \mu_{c'} \rVert, \qquad
               m_g = \lVert \bar g - \mu_{t_g} \rVert - \lVert \bar g - \mu_c \rVert.

    Clusters are taken in increasing ``m_g`` (ties in seeded random order) and all their members
    relabelled ``t_g`` while the count stays ``≤ k``; of the next cluster, the ``k - count`` members
    with the smallest own margin toward ``t_g`` (``‖z_i - μ_{t_g}‖ - ‖z_i - μ_c‖``) are relabelled, so
    exactly ``k`` flip.  The noise is strongly correlated between neighbours: a method that trusts
    agreement among nearby samples (k-NN, cleanlab's confident joint on a smooth model) sees a
    consistent, wrong neighbourhood.
    """
    y, C, k, rng = _common(labels, rate, num_classes, seed)
    x = _check_features(features, len(y))
    clusters_per_class = _check_int(clusters_per_class, "clusters_per_class", minimum=1)
    if min_cluster_size is not None:
        min_cluster_size = _check_int(min_cluster_size, "min_cluster_size", minimum=1)
    pca_dim = _check_int(pca_dim, "pca_dim", minimum=1)
    shrinkage = _check_real(shrinkage, "shrinkage", low=0.0)
    if shrinkage > 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    _need_two_classes(y)
    out = y.copy()
    if k == 0:
        return out
    z = _embed(x, y, C, pca_dim, shrinkage, True)
    cluster, target, margin = _cluster_summary(z, y, C, clusters_per_class, int(seed), min_cluster_size)
    order = np.lexsort((rng.random(len(margin)), margin))
    means = _class_means(z, y, C)
    d = _distances(z, means)
    remaining = k
    for g in order:
        if remaining == 0:
            break
        members = np.flatnonzero(cluster == g)
        if len(members) > remaining:
            own_margin = d[members, target[g]] - d[members, y[members]]
            members = members[np.lexsort((rng.random(len(members)), own_margin))[:remaining]]
        out[members] = target[g]
        remaining -= len(members)
    return out


# ---------------------------------------------------------------------------------------------
# dispatcher
# ---------------------------------------------------------------------------------------------
#: kind -> (generator, whether it takes features)
NOISE_KINDS: dict[str, tuple[Callable[..., np.ndarray], bool]] = {
    "sym": (symmetric_noise, False),
    "asym": (pair_noise, False),
    "pair": (pair_noise, False),
    "confusion": (confusion_noise, True),
    "boundary": (boundary_noise, True),
    "cluster": (cluster_noise, True),
}
#: the kinds whose flips depend on the sample (they need features)
INSTANCE_KINDS = tuple(k for k, (_, needs) in NOISE_KINDS.items() if needs)


def make_noise(kind: str, features, labels, rate: float, *, num_classes: int, seed: int = 0,
               **options) -> np.ndarray:
    r"""Noisy labels of any kind in ``NOISE_KINDS``.

    Parameters
    ----------
    kind : str
        ``"sym"``, ``"asym"`` / ``"pair"`` (class-conditional; ``features`` may be None),
        ``"confusion"``, ``"boundary"``, ``"cluster"`` (instance-dependent; need ``features``).
    features : array_like, torch.Tensor or None, shape (N, ...)
    labels : array_like of int, shape (N,)
        True labels.
    rate : float in [0, 1)
    num_classes : int
    seed : int, default 0
    **options
        The kind's own keywords (``temperature``, ``model``, ``sharpness``, ``clusters_per_class``,
        ``class_map``, ``pca_dim``, ...).

    Returns
    -------
    ndarray of int64, shape (N,)
        Exactly ``round(rate·N)`` labels differ from ``labels``.
    """
    if not isinstance(kind, str) or kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")
    fn, needs_features = NOISE_KINDS[kind]
    accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
    for name in options:
        if name not in accepted or name in ("num_classes", "seed"):
            extra = [a for a in accepted if a not in ("num_classes", "seed")]
            raise TypeError(f"noise kind {kind!r} has no option {name!r}; its options: {', '.join(extra) or 'none'}")
    if needs_features:
        if features is None:
            raise ValueError(f"noise kind {kind!r} is instance-dependent and needs features, got None")
        return fn(features, labels, rate, num_classes=num_classes, seed=seed, **options)
    if features is not None:
        num_classes_ = _check_int(num_classes, "num_classes", minimum=2)
        _check_features(features, len(_check_labels(labels, num_classes_)))
    return fn(labels, rate, num_classes=num_classes, seed=seed, **options)
