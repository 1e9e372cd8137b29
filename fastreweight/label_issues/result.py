"""What label-issue finding returns: cleanlab's familiar columns, plus the raw score and a summary."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np

from .validate import check_clean_idx, check_real

__all__ = ["LabelIssues"]

#: above this many classes ``summary()`` lists only the ``SUMMARY_TOP`` with the most issues
SUMMARY_CLASSES = 20
SUMMARY_TOP = 10


@dataclass
class LabelIssues:
    """One entry per row of the dataset (the clean rows with their trusted labels, never flagged).

    ``score``: the raw score (lower: more suspicious); ``label_score``: a monotone map of it into
    [0, 1] (lower: more suspicious, as cleanlab's label quality); ``is_label_issue``: the flagged set
    (``score <= threshold``, or with ``flag="posterior"`` / ``"confident"`` the rows the fitted noise
    model picks; ``threshold`` is then nan); ``given_label`` / ``predicted_label``: the label the dataset has and the
    one the clean subset suggests.  ``estimated_noise_rate``: the share of wrong labels the clean subset
    implies among the other rows (with an audit, ``settings["audit"]`` has its interval),
    ``threshold`` the flagging threshold on ``score`` and ``settings`` how both were chosen."""

    given_label: np.ndarray
    predicted_label: np.ndarray
    score: np.ndarray
    label_score: np.ndarray
    is_label_issue: np.ndarray
    threshold: float
    estimated_noise_rate: float | None = None
    num_classes: int | None = None
    settings: dict = field(default_factory=dict)
    #: orders rows whose ``score`` ties (lower first; ``knn`` with a noise model: the exact log-odds of the
    #: calibrated vote, whose ``score`` is clipped at ±27.6); ``None``: ties stay in index order
    tie_break: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def ranking(self) -> np.ndarray:
        """Row indices from most to least suspicious: by ``score``, ties by ``tie_break`` where given, then by
        index."""
        if self.tie_break is None:
            return np.argsort(self.score, kind="stable")
        return np.lexsort((self.tie_break, self.score))

    def to_dict(self) -> dict:
        """The columns as numpy arrays, keyed as cleanlab's ``find_label_issues`` DataFrame."""
        return {"is_label_issue": self.is_label_issue, "label_score": self.label_score,
                "given_label": self.given_label, "predicted_label": self.predicted_label, "score": self.score}

    def to_dataframe(self):
        """A ``pandas.DataFrame`` with the columns of ``to_dict()`` (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is optional
            raise ImportError("LabelIssues.to_dataframe needs pandas (pip install pandas); to_dict() does not") from None
        return pd.DataFrame(self.to_dict())

    def issues_per_class(self) -> dict[int, int]:
        """Flagged rows per given label."""
        C = self.num_classes or int(max(self.given_label.max(initial=-1), self.predicted_label.max(initial=-1))) + 1
        counts = np.bincount(self.given_label[self.is_label_issue], minlength=C)
        return {c: int(n) for c, n in enumerate(counts)}

    def summary(self) -> str:
        """One line: rows, flagged rows, the estimated noise rate, issues per class."""
        n, k = len(self), int(self.is_label_issue.sum())
        rate = "n/a" if self.estimated_noise_rate is None else f"{self.estimated_noise_rate:.1%}"
        audit = self.settings.get("audit")
        if audit:  # audit.py: the estimate's interval and what the audit itself found
            lo, hi = audit["interval"]
            rate += (f" ({audit['coverage']:.0%} interval {lo:.1%}-{hi:.1%}; the audit of {audit['rows']} rows "
                     f"found {audit['wrong']} wrong)")
        per = self.issues_per_class()
        if len(per) <= SUMMARY_CLASSES:
            listed = "issues per given class: " + ", ".join(f"{c}: {v}" for c, v in per.items())
        else:  # one line stays one line: the classes with the most issues, the rest in issues_per_class()
            top = sorted((c for c, v in per.items() if v), key=lambda c: (-per[c], c))[:SUMMARY_TOP]
            listed = (f"issues per given class (the {len(top)} most of {len(per)}; issues_per_class() has all): "
                      + (", ".join(f"{c}: {per[c]}" for c in top) or "none"))
        return f"{k} of {n} rows flagged ({k / max(n, 1):.1%}); estimated noise rate {rate}; {listed}"

    def write_csv(self, path: str) -> int:
        """``rank,index,given_label,predicted_label,score,label_score,is_label_issue``, most suspicious first.
        Never overwrites (``FileExistsError``).  Returns the number of flagged rows."""
        with open(path, "x", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["rank", "index", "given_label", "predicted_label", "score", "label_score", "is_label_issue"])
            for rank, i in enumerate(self.ranking()):
                w.writerow([rank, int(i), int(self.given_label[i]), int(self.predicted_label[i]),
                            f"{float(self.score[i]):.6g}", f"{float(self.label_score[i]):.6g}",
                            int(bool(self.is_label_issue[i]))])
        return int(self.is_label_issue.sum())

    @classmethod
    def from_score_result(cls, res, *, threshold: float = 0.0, num_classes: int | None = None, clean_idx=None,
                          estimated_noise_rate: float | None = None, settings: dict | None = None) -> "LabelIssues":
        """A ``LabelIssues`` from ``score_dataset``'s ``ScoreResult``: flagged where ``score <= threshold``
        (never the trusted rows ``clean_idx``); ``label_score`` the logistic map
        ``1 / (1 + exp(-score / median|score|))``.  ``clean_idx`` is checked as ``find_label_issues`` checks
        it (row indices in range, no repeats): a boolean mask would otherwise be read as the rows 0 and 1."""
        scores = np.asarray(res.scores)
        threshold = check_real("threshold", threshold, "flagged: score <= threshold")
        if clean_idx is not None:
            clean_idx = check_clean_idx(clean_idx, scores.shape[0])
        scale = float(np.median(np.abs(scores))) if scores.size else 1.0
        label_score = 1.0 / (1.0 + np.exp(-scores.astype(np.float64) / (scale or 1.0)))
        labels, suggested = np.asarray(res.labels), np.asarray(res.suggested)
        C = num_classes or int(max(labels.max(initial=0), suggested.max(initial=0))) + 1
        flagged = scores <= threshold
        if clean_idx is not None:
            flagged[clean_idx] = False
        return cls(given_label=labels, predicted_label=suggested, score=scores, label_score=label_score,
                   is_label_issue=flagged, threshold=float(threshold),
                   estimated_noise_rate=estimated_noise_rate, num_classes=C, settings=dict(settings or {}))
