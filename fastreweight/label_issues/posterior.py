"""The noise-model posterior of ``flag="posterior"``: the probability that each given label is right.

Two steps, both fitted on the dataset at hand:

1. **Class probabilities calibrated on the clean rows.**  The neighbour vote ``P`` (``knn``'s trusted
   vote over every row) and the clean vote ``Q`` (the ``clean_k`` nearest clean rows alone;
   ``neighbours.clean_votes``) are combined as

       π_i(c) ∝ exp(a·log(P_ic + ε) + b·log(Q_ic + ε)),      a, b ≥ 0,

   with ``(a, b)`` minimising the negative log-likelihood of the clean rows' trusted labels (each clean
   row's votes exclude itself, so this is out of sample).  The fit is convex (a log-sum-exp of a
   linear map minus a linear term), so it has one minimum.  The clean rows decide how far to trust
   each vote on this dataset (``settings["calibration"]`` records both weights).
2. **A class-conditional noise model fitted by EM** over the other rows: ``T[c, a]`` = P(given label
   ``a`` | true class ``c``), started at 0.9 on the diagonal.  The E-step is Bayes' rule,

       post_i(c) = π_i(c)·T[c, y_i] / Σ_c' π_i(c')·T[c', y_i],

   the M-step ``T[c, a] ∝ Σ_{i: y_i = a} post_i(c)`` (a pseudo-count of 1e-3 keeps every entry
   positive).  The clean rows are not in it: their labels were replaced by the trusted ones.

A row is flagged when ``post_i(y_i) < 1/2``: its label is more likely wrong than right.  The estimated
noise rate is the mean of ``1 − post_i(y_i)`` over the rows scored.

``flag="confident"`` (the default) adds a count that does not assume class-conditional noise
(``confident_count``): the rows whose calibrated probability of some class reaches what the clean rows
of that class get on average, counted as a confident joint of given label × class.  The flagged set has
that count's size (its off-diagonal) at most: the posterior's rows first, then the rows with the lowest
``π_i(y_i)`` among those whose most probable class is not their label (``flag.py``); where the posterior
flags more than the count, its least sure rows are left out.

Where it holds and where it does not (docs/label-issues.md): when the noise depends on the class alone
(symmetric, pair flips) the estimated rate is within about a point of the true one at 10% and 25-30%
noise, and the flagged set is precise at high recall.  When the noise depends on the sample (labels
flipped where a sample looks like another class), the class-conditional model believes most flips are
honest ambiguity: the flagged set stays precise but its recall and the estimated rate fall well short.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["calibrated_class_probs", "noise_posterior", "confident_count", "fit_noise_model", "noise_model", "NoiseModel",
           "choose_neighbourhood", "clean_nll", "label_log_odds", "EPS", "LEVEL"]

#: the floor added to every vote share before its log: a class no neighbour votes for is unlikely, not impossible
EPS = 1e-3
#: a row is flagged when the posterior probability of its given label is below this
LEVEL = 0.5
#: the relative tolerance of ``confident_count``'s thresholds (rounding of a mean of equal values)
THRESHOLD_RTOL = 1e-9
_EM_ITERATIONS = 200
_EM_TOL = 1e-7


def _nll_and_grad(w: np.ndarray, feats: np.ndarray, target: np.ndarray):
    """Mean negative log-likelihood of ``target`` under softmax(Σ_k w_k·feats[k]) and its gradient."""
    z = np.tensordot(w, feats, axes=1)  # M×C
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    rows = np.arange(target.size)
    nll = -float(np.mean(np.log(np.clip(p[rows, target], 1e-300, None))))
    # d/dw_k: mean over rows of E_p[f_k] − f_k[target]
    grad = np.array([float(np.mean((p * f).sum(1) - f[rows, target])) for f in feats])
    return nll, grad


def calibrated_class_probs(P: np.ndarray, Q: np.ndarray, labels: np.ndarray, clean_mask: np.ndarray,
                           eps: float = EPS) -> tuple[np.ndarray, tuple[float, float]]:
    """``(π, (a, b))``: step 1 of the module doc.  ``P``, ``Q`` N×C vote shares, ``labels`` N integer
    labels (trusted on the clean rows), ``clean_mask`` N bool with at least one clean row."""
    from scipy.optimize import minimize  # scikit-learn's own dependency

    feats = np.stack([np.log(P + eps), np.log(Q + eps)])  # 2×N×C
    target = np.asarray(labels, np.int64)[clean_mask]
    res = minimize(_nll_and_grad, np.array([1.0, 0.5]), args=(feats[:, clean_mask], target), jac=True,
                   method="L-BFGS-B", bounds=[(0.0, 50.0), (0.0, 50.0)])
    a, b = (float(v) for v in res.x)
    z = a * feats[0] + b * feats[1]
    z -= z.max(1, keepdims=True)
    pi = np.exp(z)
    pi /= pi.sum(1, keepdims=True)
    return pi, (a, b)


def label_log_odds(P: np.ndarray, Q: np.ndarray, weights: tuple[float, float], labels: np.ndarray,
                   eps: float = EPS) -> np.ndarray:
    """``log(π_i(y_i) / (1 − π_i(y_i)))`` for every row, computed from the calibrated logits ``z``
    (``calibrated_class_probs``' ``a·log(P + eps) + b·log(Q + eps)``) as ``z_y − logsumexp_{c≠y} z_c``: exact
    where ``π`` itself rounds to 0 or 1 in float64, so rows the vote is sure of still come in order.
    ``+inf`` with a single class."""
    a, b = weights
    z = a * np.log(P.astype(np.float64) + eps) + b * np.log(Q.astype(np.float64) + eps)
    rows = np.arange(z.shape[0])
    labels = np.asarray(labels, np.int64)
    own = z[rows, labels].copy()
    z[rows, labels] = -np.inf
    top = z.max(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        others = top + np.log(np.exp(z - np.where(np.isfinite(top), top, 0.0)[:, None]).sum(1))
    return own - others


def clean_nll(pi: np.ndarray, labels: np.ndarray, clean_mask: np.ndarray) -> float:
    """The mean negative log-likelihood of the clean rows' trusted labels under ``pi`` (N×C)."""
    rows = np.flatnonzero(clean_mask)
    return -float(np.mean(np.log(np.clip(pi[rows, np.asarray(labels, np.int64)[rows]], 1e-300, None))))


def choose_neighbourhood(P_by_k: dict, Q: np.ndarray, labels: np.ndarray, clean_mask: np.ndarray
                         ) -> tuple[int, dict, tuple[np.ndarray, tuple[float, float]]]:
    """``(k, {k: nll}, (π, (a, b)))``: the neighbourhood size whose votes, calibrated with ``Q`` (step
    1), give the clean rows' trusted labels the lowest negative log-likelihood (out of sample: no row
    votes for itself; ties go to the smaller ``k``), each size's NLL, and the chosen size's calibration."""
    nll, best = {}, None
    for k, P in sorted(P_by_k.items()):  # one size's calibration held at a time besides the best so far
        calibration = calibrated_class_probs(P.astype(np.float64), Q.astype(np.float64), labels, clean_mask)
        nll[k] = clean_nll(calibration[0], labels, clean_mask)
        if best is None or nll[k] < nll[best[0]]:  # strictly lower: a tie keeps the smaller k
            best = (k, calibration)
    return best[0], nll, best[1]


def noise_posterior(pi: np.ndarray, labels: np.ndarray, clean_mask: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """``(post_given, T, noise_rate, iterations)``: step 2 of the module doc.  ``post_given[i]`` is the
    posterior probability that row ``i``'s label ``labels[i]`` is right (1 on the clean rows);
    ``noise_rate`` the mean of ``1 − post_given`` over the other rows (nan when there are none)."""
    N, C = pi.shape
    y = np.asarray(labels, np.int64)
    rows = np.arange(N)
    other = ~np.asarray(clean_mask, bool)
    y_other, pi_other = y[other], pi[other]
    by_label = [(a, np.flatnonzero(y_other == a)) for a in np.unique(y_other)]  # rows given each label
    T = np.full((C, C), 0.1 / max(C - 1, 1))
    np.fill_diagonal(T, 0.9)
    it = 0
    for it in range(1, _EM_ITERATIONS + 1):
        post = pi_other * T[:, y_other].T
        post /= post.sum(1, keepdims=True).clip(1e-300)
        counts = np.full((C, C), 1e-3)  # true class × given label
        for a, members in by_label:
            counts[:, a] += post[members].sum(0)
        T_new = counts / counts.sum(1, keepdims=True)
        done = float(np.abs(T_new - T).max()) < _EM_TOL
        T = T_new
        if done:
            break
    post = pi * T[:, y].T
    post /= post.sum(1, keepdims=True).clip(1e-300)
    post_given = post[rows, y]
    post_given[~other] = 1.0
    rate = float(np.mean(1.0 - post_given[other])) if other.any() else float("nan")
    return post_given, T, rate, it


def confident_count(pi: np.ndarray, labels: np.ndarray, clean_mask: np.ndarray) -> tuple[int, np.ndarray]:
    """``(count, joint)``: the number of wrong labels a confident joint of the calibrated ``π`` implies.

    The threshold of class ``c`` is the mean ``π_ic`` over the clean rows whose trusted label is ``c``
    (what a correctly labelled row of class ``c`` gets; every class has clean rows, validate.py).  A
    row ``i`` outside the clean subset with given label ``a`` counts in ``joint[a, j]`` for the class
    ``j`` of largest ``π_ij`` among those at or above their threshold (not at all when none is), even
    when ``a`` is its most probable class of all: a cluster of similar rows flipped together votes for
    its wrong label, and only another class's threshold reveals it (counting such rows as right lost
    recall and moved the estimate away from the truth on cluster noise; it helped the estimate with
    many classes of few rows each, docs/label-issues.md).  Each row of ``joint`` is then scaled to the
    number of rows given label ``a``.  ``count`` is the rounded sum of its off-diagonal: the rows
    confidently of a class other than their label, at the label's rate."""
    N, C = pi.shape
    y = np.asarray(labels, np.int64)
    clean = np.asarray(clean_mask, bool)
    other = ~clean
    thresholds = np.array([pi[clean & (y == c), c].mean() if (clean & (y == c)).any() else np.inf
                           for c in range(C)])
    # a relative tolerance: unanimous votes give many rows the same saturated π, and their mean can
    # round one ulp above that value, which would leave every such row below its own class's threshold
    above = pi >= thresholds * (1.0 - THRESHOLD_RTOL)  # N×C bool
    confident = above.any(1) & other
    best = np.where(above, pi, -1.0).argmax(1)
    joint = np.zeros((C, C))
    np.add.at(joint, (y[confident], best[confident]), 1.0)
    given = np.bincount(y[other], minlength=C).astype(np.float64)
    joint *= (given / np.maximum(joint.sum(1), 1.0))[:, None]
    return int(round(float(joint.sum() - np.trace(joint)))), joint


class NoiseModel(NamedTuple):
    """What ``fit_noise_model`` returns for the rows of the dataset (the clean rows included)."""
    post_given: np.ndarray  # P(given label right) under the class-conditional model; 1 on clean rows
    pi_given: np.ndarray  # the calibrated probability π_i(y_i) of the given label
    pi_argmax: np.ndarray  # the class of largest calibrated probability
    transition: np.ndarray  # T, C×C
    rate: float  # the posterior's noise rate (mean of 1 − post_given off the clean rows)
    iterations: int  # EM iterations
    weights: tuple[float, float]  # (a, b) of the calibration
    count: int  # confident_count's number of wrong labels


def fit_noise_model(P: np.ndarray, Q: np.ndarray, labels: np.ndarray, clean_mask: np.ndarray) -> NoiseModel:
    """Steps 1 and 2 of the module doc and ``confident_count`` on the votes ``P`` and ``Q`` (N×C)."""
    calibration = calibrated_class_probs(P.astype(np.float64), Q.astype(np.float64), labels, clean_mask)
    return noise_model(calibration, labels, clean_mask)


def noise_model(calibration: tuple[np.ndarray, tuple[float, float]], labels: np.ndarray,
                clean_mask: np.ndarray) -> NoiseModel:
    """Step 2 of the module doc and ``confident_count`` on a calibration ``(π, (a, b))`` of step 1."""
    pi, weights = calibration
    y = np.asarray(labels, np.int64)
    post_given, T, rate, iterations = noise_posterior(pi, y, clean_mask)
    count, _ = confident_count(pi, y, clean_mask)
    return NoiseModel(post_given, pi[np.arange(y.size), y], pi.argmax(1), T, rate, iterations, weights, count)
