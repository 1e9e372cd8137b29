"""``find_label_issues``: the public entry of label-issue finding (validate → score → flag)."""
from __future__ import annotations

import numpy as np

from .result import LabelIssues
from .stream import score_dataset

__all__ = ["find_label_issues", "SCORERS"]

#: scorer name -> score_dataset options (the scorers of this module; "auto" is the recommended one)
SCORERS = {
    "fbr": dict(),
    "fbr-whiten": dict(whiten="auto", refine=1),
}
SCORERS["auto"] = SCORERS["fbr-whiten"]


def _clean_side(features, labels, clean_idx, clean_features, clean_labels):
    if clean_idx is not None:
        if clean_features is not None or clean_labels is not None:
            raise ValueError("give the clean subset either as clean_idx or as clean_features and clean_labels, not both")
        idx = np.asarray(clean_idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"clean_idx must be a 1-D array of integer row indices, got {idx.dtype} {idx.shape}")
        return np.asarray(features[idx]), np.asarray(labels)[idx]
    if clean_features is None or clean_labels is None:
        raise ValueError("the clean subset is missing: give clean_idx, or clean_features and clean_labels")
    return clean_features, clean_labels


def find_label_issues(features, labels, *, clean_idx=None, clean_features=None, clean_labels=None,
                      num_classes: int | None = None, scorer: str = "auto", device="cpu", chunk_rows: int = 8192,
                      progress: bool = False) -> LabelIssues:
    """Rows of ``features`` (N×d) whose ``labels`` (N) are likely wrong, given a trusted subset.

    The clean subset is ``clean_idx`` (rows of ``features`` whose ``labels`` are trusted) or
    ``clean_features`` / ``clean_labels``.  ``scorer``: a name of ``SCORERS``.  Returns a
    ``LabelIssues`` (cleanlab's columns, the raw score, the flagged set and the threshold)."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    cz, cy = _clean_side(features, labels, clean_idx, clean_features, clean_labels)
    res = score_dataset(features, labels, cz, cy, num_classes=num_classes, chunk_rows=chunk_rows, device=device,
                        progress=progress, **SCORERS[scorer])
    threshold = 0.0
    scale = float(np.median(np.abs(res.scores))) or 1.0
    label_score = 1.0 / (1.0 + np.exp(-res.scores.astype(np.float64) / scale))
    flagged = res.scores <= threshold
    C = num_classes or int(max(res.labels.max(initial=0), res.suggested.max(initial=0))) + 1
    return LabelIssues(given_label=res.labels, predicted_label=res.suggested, score=res.scores,
                       label_score=label_score, is_label_issue=flagged, threshold=threshold,
                       estimated_noise_rate=float(flagged.mean()) if len(flagged) else None, num_classes=C,
                       settings={"scorer": scorer, **SCORERS[scorer]})
