"""What an audit tells: the clean rows' labels as the dataset gave them, beside their verified ones.

A trusted subset is often an audit: rows of the dataset whose labels someone checked.  Then
``find_label_issues(features, labels, clean_idx=audited, clean_labels=verified)`` knows, for each
audited row, whether the dataset's label was wrong, and so sees the noise itself rather than only
what correct labels look like.  Two estimates of the share of wrong labels among the other rows,
both assuming the audited rows are a uniform random sample of the dataset:

* **the audit's share** ``W / M`` (``W`` of the ``M`` audited labels wrong), with its exact
  (Clopper–Pearson) interval: needs no score, so every scorer reports it;
* **the score-assisted estimate** (``scorer="knn"``): a logistic fit of "the given label is wrong"
  on the score ``s`` (the calibrated log-odds of the given label; an audited row is scored with its
  given label, from its neighbours alone),

      P(wrong | s) = 1 / (1 + exp(−(β₀ + β₁·s))),

  averaged over the other rows.  The intercept is not penalised, so the fitted probabilities of the
  audited rows sum to ``W`` (the likelihood's score equation), and the estimate is the audit's share
  corrected by how the dataset's scores differ from the audit's: consistent for a random audit even
  where the logistic form is wrong, and with a smaller error than the share where the score tells
  wrong labels apart.  A small ridge on ``β₁`` (of the standardised score) keeps the fit finite when the
  audit's wrong and right labels are perfectly separated by ``s``.  Its interval is a percentile
  bootstrap over the audited rows, each draw's rate spread by the rows' own outcomes around their
  probabilities (the share of wrong labels among the rows is a sum of Bernoulli draws; a normal
  approximation), which widened it where the audit is a large part of a small dataset.

``flag="audit"`` flags the other rows whose fitted ``P(wrong | s)`` is at least ``LEVEL``: the score
threshold ``s ≤ −β₀ / β₁``.  Unlike the other rules it learns from wrong labels of this dataset how
suspicious a score has to be (docs/label-issues.md has its measured trade-off).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Audit", "audit_share", "fit_audit", "memory_bytes", "LEVEL", "INTERVAL", "RIDGE"]

#: ``flag="audit"`` flags a row when its fitted probability of a wrong label is at least this
LEVEL = 0.5
#: the coverage of the reported intervals
INTERVAL = 0.9
#: the ridge on the slope of the standardised score (the intercept is not penalised)
RIDGE = 1e-2
#: bootstrap draws of the score-assisted interval; at most this many other rows are averaged per draw
_DRAWS = 400
_MAX_ROWS_PER_DRAW = 1 << 14
_NEWTON_STEPS = 50
_MAX_STEP = 5.0


class Audit(NamedTuple):
    """``find_label_issues``' audit: ``rows`` audited, ``wrong`` of them wrong in the dataset;
    ``share`` = ``wrong / rows`` and its exact ``share_interval``; ``rate`` and ``interval``: the
    score-assisted estimate when ``fitted``, else the share and its interval; ``intercept`` and
    ``slope`` of ``P(wrong | s)`` on the raw score (nan when not fitted)."""
    rows: int
    wrong: int
    share: float
    share_interval: tuple[float, float]
    rate: float
    interval: tuple[float, float]
    intercept: float
    slope: float
    fitted: bool

    def threshold(self) -> float:
        """The score at or below which ``P(wrong | s) >= LEVEL`` (``-inf``: no row; with a slope that is
        not negative the fit does not say lower scores are more suspicious, so no row is flagged)."""
        if not self.fitted or not self.slope < 0:
            return float("-inf")
        logit = np.log(LEVEL / (1.0 - LEVEL))
        return float((logit - self.intercept) / self.slope)

    def settings(self) -> dict:
        """What ``LabelIssues.settings["audit"]`` records (rounded)."""
        out = {"rows": self.rows, "wrong": self.wrong, "share": round(self.share, 4),
               "share_interval": [round(v, 4) for v in self.share_interval],
               "estimate": "score-assisted" if self.fitted else "share", "rate": round(self.rate, 4),
               "interval": [round(v, 4) for v in self.interval], "coverage": INTERVAL}
        if self.fitted:
            out.update(intercept=round(self.intercept, 4), slope=round(self.slope, 4))
        return out


def memory_bytes(n: int, audited: int) -> int:
    """About the memory ``find_label_issues`` adds for an audit of ``audited`` rows among ``n``: the
    scores of every row and the fitted probabilities over them (float64, with two temporaries), and the
    bootstrap's ``_DRAWS × audited`` arrays (indices, scores, outcomes, the Newton step's eight
    temporaries) and its probabilities over at most ``_MAX_ROWS_PER_DRAW`` rows."""
    return 8 * 4 * n + 8 * 11 * _DRAWS * audited + 8 * 3 * min(n, _MAX_ROWS_PER_DRAW)


def _clopper_pearson(k: int, n: int, coverage: float) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1.0 - coverage) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def audit_share(wrong: np.ndarray) -> Audit:
    """The audit's share alone (every scorer): ``wrong`` is one bool per audited row."""
    wrong = np.asarray(wrong, bool)
    m, w = int(wrong.size), int(wrong.sum())
    share, interval = w / m, _clopper_pearson(w, m, INTERVAL)
    return Audit(m, w, share, interval, share, interval, float("nan"), float("nan"), False)


def _logistic(s: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """``(β₀, β₁)`` of the module doc on the raw scores, for each row of ``s`` and ``wrong`` (B×M: one
    audit per row, fitted together); nan where every audited label is right or every one wrong (the
    intercept has no finite optimum).  Damped Newton steps on the convex penalised likelihood."""
    s, w = np.atleast_2d(np.asarray(s, np.float64)), np.atleast_2d(np.asarray(wrong, np.float64))
    m = s.shape[1]
    mu, sd = s.mean(1, keepdims=True), s.std(1, keepdims=True)
    sd[sd == 0] = 1.0
    z = (s - mu) / sd
    theta = np.zeros((s.shape[0], 2))
    ridge = 2 * RIDGE * m
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(theta[:, :1] + theta[:, 1:] * z)))
        r, v = p - w, p * (1.0 - p)
        g = np.stack([r.sum(1), (r * z).sum(1) + ridge * theta[:, 1]], 1)
        h00, h01, h11 = v.sum(1) + 1e-12, (v * z).sum(1), (v * z * z).sum(1) + ridge
        det = h00 * h11 - h01 ** 2
        step = np.stack([h11 * g[:, 0] - h01 * g[:, 1], h00 * g[:, 1] - h01 * g[:, 0]], 1) / det[:, None]
        norm = np.maximum(np.abs(step).max(1, keepdims=True) / _MAX_STEP, 1.0)  # damped: at most _MAX_STEP a step
        theta -= step / norm
        if np.abs(step).max() < 1e-10:
            break
    degenerate = (w.sum(1) == 0) | (w.sum(1) == m)
    b0, b1 = theta[:, 0] - theta[:, 1] * mu[:, 0] / sd[:, 0], theta[:, 1] / sd[:, 0]  # back to the raw score
    out = np.stack([b0, b1], 1)
    out[degenerate] = np.nan
    return out


def _mean_prob(b: np.ndarray, s: np.ndarray, spread: bool = False):
    """The mean of ``P(wrong | s)`` over ``s`` for each fit ``b`` (B×2); with ``spread`` also the mean of
    ``P·(1 − P)`` (the variance of one row's outcome)."""
    out = []
    for b0, b1 in b:
        p = 1.0 / (1.0 + np.exp(-(b0 + b1 * s)))
        out.append((float(p.mean()), float((p * (1.0 - p)).mean())))
    out = np.array(out).reshape(-1, 2)
    return out if spread else out[:, 0]


def fit_audit(audit_scores: np.ndarray, wrong: np.ndarray, other_scores: np.ndarray, seed: int = 0) -> Audit:
    """The score-assisted estimate of the module doc: ``audit_scores`` the audited rows' scores of
    their given labels, ``wrong`` whether each was wrong, ``other_scores`` the scores of the rows
    estimated over.  Degenerate audits (no wrong label, or no right one) give the share alone."""
    s, wrong = np.asarray(audit_scores, np.float64), np.asarray(wrong, bool)
    other = np.asarray(other_scores, np.float64)
    base = audit_share(wrong)
    b = _logistic(s, wrong)
    if np.isnan(b).any() or other.size == 0:
        return base
    rate = float(_mean_prob(b, other)[0])
    rng = np.random.default_rng(seed)
    sub = other if other.size <= _MAX_ROWS_PER_DRAW else rng.choice(other, _MAX_ROWS_PER_DRAW, replace=False)
    rows = rng.integers(0, s.size, (_DRAWS, s.size))
    bb = _logistic(s[rows], wrong[rows])
    draws = wrong[rows].mean(1)  # a draw with no wrong (or no right) label: its share
    fitted = ~np.isnan(bb).any(1)
    mean_and_spread = _mean_prob(bb[fitted], sub, spread=True)
    # the rows' own outcomes given their probabilities: the share of wrong labels among these rows is a
    # sum of Bernoulli draws around the mean (normal approximation)
    draws[fitted] = mean_and_spread[:, 0] + rng.standard_normal(int(fitted.sum())) * np.sqrt(
        mean_and_spread[:, 1] / other.size)
    a = (1.0 - INTERVAL) / 2
    interval = (float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a)))
    return base._replace(rate=rate, interval=interval, intercept=float(b[0, 0]), slope=float(b[0, 1]), fitted=True)
