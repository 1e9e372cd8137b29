"""Choosing the flagged set with the clean subset, which cleanlab never has.

The clean rows' own scores (their labels are right) estimate the score distribution ``F_c`` of
correctly labelled rows.  They are taken out of sample, as the dataset's rows are scored: knn's votes
leave each row out, and the FBR scorers take each clean row's share out of its class mean
(``score_dataset``'s ``clean_rows``); in sample a clean row scores high, and so does the estimate.
Two uses:

* **the noise rate**: with ``F_d`` the distribution of the other rows' scores, a mixture
  ``F_d = (1 − π)·F_c + π·F_n`` whose mislabelled part ``F_n`` rarely reaches the clean rows' upper
  half gives ``π ≈ 1 − P_d(s ≥ q) / P_c(s ≥ q)`` at the clean scores' median ``q``
  (``estimate_noise_rate``);
* **a false-discovery rate**: flagging the rows with score ``≤ t`` makes about ``(1 − π)·n·F_c(t)``
  false discoveries; ``fdr_threshold`` picks the largest ``t`` whose estimated rate is at most
  ``alpha`` (``F_c`` with one pseudo-count, so a few clean rows never claim zero errors: with M clean
  rows no rate below about ``(1 − π)/(π·(M + 1))`` can be certified, and ``find_label_issues`` then
  falls back to the estimated noise rate and says so in its settings).
"""
from __future__ import annotations

import numpy as np

from .audit import LEVEL as AUDIT_LEVEL
from .result import LabelIssues

__all__ = ["estimate_noise_rate", "fdr_threshold", "flag_rows", "MODEL_FLAGS"]

#: the flag rules that need the noise model of ``posterior.py`` (``knn`` only)
MODEL_FLAGS = ("confident", "posterior")


def estimate_noise_rate(scores: np.ndarray, clean_scores: np.ndarray) -> float:
    """The share of wrong labels among ``scores``' rows, from the clean rows' ``clean_scores``."""
    if clean_scores.size == 0 or scores.size == 0:
        return float("nan")
    q = float(np.median(clean_scores))
    above_clean = float((clean_scores >= q).mean())  # >=: scores may saturate (ties at the maximum)
    return float(np.clip(1.0 - float((scores >= q).mean()) / above_clean, 0.0, 1.0))


def fdr_threshold(scores: np.ndarray, clean_scores: np.ndarray, noise_rate: float, alpha: float) -> float:
    """The largest score threshold whose estimated false-discovery rate is at most ``alpha``
    (``-inf``: flag nothing)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    t = np.sort(scores)
    flagged = np.arange(1, t.size + 1)
    clean_sorted = np.sort(clean_scores)
    f_clean = (np.searchsorted(clean_sorted, t, side="right") + 1) / (clean_sorted.size + 1)
    pi = 0.0 if not np.isfinite(noise_rate) else noise_rate
    fdr = (1 - pi) * t.size * f_clean / flagged
    ok = np.flatnonzero(fdr <= alpha)
    return float(t[ok[-1]]) if ok.size else float("-inf")


def flag_rows(score, quality, suggested, y, clean_idx, clean_scores, C, flag, alpha, threshold, model, audit,
              settings) -> LabelIssues:
    """The flagged set by rule ``flag`` (find.py's module doc), wrapped with the columns in a ``LabelIssues``.
    ``model``: ``find._knn``'s ``posterior.NoiseModel``, for ``flag="posterior"`` or ``"confident"`` (else
    ``None``); ``audit``: ``audit.py``'s ``Audit`` when the clean rows are an audit (else ``None``).  With an
    audit, its estimate is the noise rate reported and the one ``"fdr"`` and ``"rate"`` use; the rule's own
    estimate goes to ``settings["rule_noise_rate"]``."""
    others = np.ones(score.shape[0], bool)
    if clean_idx is not None:
        others[clean_idx] = False
    if audit is not None:
        settings["audit"] = audit.settings()
    if flag in MODEL_FLAGS:
        issues = _flag_by_model(score, quality, suggested, y, others, C, model, flag, settings)
        if audit is not None:
            settings["rule_noise_rate"] = issues.estimated_noise_rate
            issues.estimated_noise_rate = audit.rate
        return issues
    if flag == "audit":  # the rows whose fitted P(wrong | score) reaches audit.LEVEL
        threshold = audit.threshold()
        settings.update(threshold=threshold, level=AUDIT_LEVEL)
        return _issues(score, quality, suggested, y, (score <= threshold) & others, threshold, audit.rate, C, settings)
    rate = estimate_noise_rate(score[others], clean_scores)
    if audit is not None:
        settings["rule_noise_rate"] = rate
        rate = audit.rate
    if flag == "fdr":
        threshold = fdr_threshold(score[others], clean_scores, rate, alpha)
        if threshold == float("-inf") and np.isfinite(rate) and rate > 0:  # too few clean rows to certify alpha
            flag = settings["flag"] = "rate"
            settings["fallback"] = f"no threshold certifies alpha={alpha} with {clean_scores.size} clean rows"
    if flag == "rate":
        k = int(round((0.0 if not np.isfinite(rate) else rate) * others.sum()))
        threshold = float(np.sort(score[others])[k - 1]) if k else float("-inf")
    # "score", and "margin" (find_label_issues passes its threshold -margin): a fixed threshold
    flagged = (score <= threshold) & others
    return _issues(score, quality, suggested, y, flagged, threshold, rate, C, settings)


def _flag_by_model(score, quality, suggested, y, others, C, model, flag, settings) -> LabelIssues:
    """``flag="posterior"``: the rows whose given label is more likely wrong than right (posterior.py);
    ``flag="confident"``: ``model.count`` rows (posterior.py's confident count), those the posterior
    flags first (lowest posterior first), then the others of lowest ``model.pi_given`` (ties: the lower
    index first), so the posterior's set is trimmed where it is larger than the count and topped up where
    it is smaller.  The top-up takes only rows whose suggested label differs from the given one: a row
    whose own label is still its most probable class has no better label to offer, and where votes
    spread over many classes (many classes, few rows each) such rows fill the count with right labels
    (``benchmarks/many_classes_label_issues.py``); the set is then smaller than the count.  Not a score
    threshold (``threshold`` is nan); the noise rate is the posterior's, or for ``"confident"`` the
    count's share of the rows scored."""
    from .posterior import LEVEL

    a, b = model.weights
    settings.update(level=LEVEL, calibration={"P": round(a, 4), "Q": round(b, 4)}, em_iterations=model.iterations,
                    transition_diagonal=[round(float(v), 4) for v in np.diag(model.transition)])
    flagged = (model.post_given < LEVEL) & others
    rate = model.rate
    if flag == "confident":
        n_others = int(others.sum())
        settings.update(posterior_flagged=int(flagged.sum()), confident_count=model.count,
                        posterior_noise_rate=rate)
        # post_given − 2 < 0 <= pi_given: the posterior's rows come first, the most surely wrong first
        key = np.where(flagged, model.post_given - 2.0, model.pi_given)
        eligible = others & (flagged | (np.asarray(suggested) != np.asarray(y)))
        order = np.argsort(np.where(eligible, key, np.inf), kind="stable")
        flagged = np.zeros_like(flagged)
        flagged[order[:min(model.count, int(eligible.sum()))]] = True
        rate = model.count / n_others if n_others else float("nan")
    return _issues(score, quality, suggested, y, flagged, float("nan"), rate, C, settings)


def _issues(score, quality, suggested, y, flagged, threshold, rate, C, settings) -> LabelIssues:
    return LabelIssues(given_label=y, predicted_label=np.asarray(suggested, dtype=np.int64), score=score,
                       label_score=np.asarray(quality, dtype=np.float64), is_label_issue=flagged,
                       threshold=float(threshold), estimated_noise_rate=None if not np.isfinite(rate) else rate,
                       num_classes=C, settings=settings)
