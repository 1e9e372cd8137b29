"""``find_label_issues``: the public entry of label-issue finding (validate → score → flag).

Scorers (``SCORERS``):

* ``"knn"`` — neighbour agreement with trust (``neighbours.py``): the labels of each row's nearest
  rows, the clean rows counting more and every other row as much as its own label is believed; in
  memory, O(N²·d) (``KNN_MAX_ROWS`` rows at most).
* ``"fbr"`` — the FBR score of SPEC §3.4 against the clean subset's class means, streamed
  (``score_dataset``: any N, memory-mapped files); ``"fbr-whiten"`` adds the clean-fitted whitening
  and one refinement round.

Flagging (``flag``): ``"fdr"`` flags the rows whose estimated false-discovery rate is at most
``alpha`` (``flag.py``: the clean rows' own scores estimate the score distribution of correct labels);
``"rate"`` the estimated number of wrong labels, lowest scores first; ``"score"`` every row with score
``<= threshold``.  ``"auto"``: ``"fdr"`` for ``"knn"`` (its clean rows are scored out of sample, as
every row), ``"score"`` with threshold 0 for the FBR scorers (their clean rows score themselves).
"""
from __future__ import annotations

import numpy as np

from .flag import flag_rows
from .neighbours import neighbour_agreement
from .result import LabelIssues
from .stream import score_dataset

__all__ = ["find_label_issues", "SCORERS", "KNN_MAX_ROWS"]

SCORERS = ("auto", "knn", "fbr", "fbr-whiten")
_FBR = {"fbr": dict(), "fbr-whiten": dict(whiten="auto", refine=1)}
FLAGS = ("auto", "fdr", "rate", "score")
KNN_MAX_ROWS = 200_000


def _clean_rows(n: int, clean_idx) -> np.ndarray:
    idx = np.asarray(clean_idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"clean_idx must be a 1-D array of integer row indices, got {idx.dtype} of shape {idx.shape}")
    if idx.size == 0:
        raise ValueError("clean_idx is empty: the clean subset needs at least one row per class")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"clean_idx must index rows of features (0..{n - 1}), got values in [{idx.min()}, {idx.max()}]")
    if np.unique(idx).size != idx.size:
        raise ValueError("clean_idx holds duplicated row indices")
    return idx.astype(np.int64)


def _check(features, labels, num_classes):
    if getattr(features, "ndim", None) != 2:
        raise ValueError(f"features must be a 2-D array [N, d], got {type(features).__name__} of shape "
                         f"{getattr(features, 'shape', None)}")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != features.shape[0]:
        raise ValueError(f"labels must be 1-D with one entry per row of features ({features.shape[0]}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {y.dtype}")
    C = int(num_classes) if num_classes is not None else int(y.max(initial=0)) + 1
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels must lie in [0, {C}), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64), C


def _knn(features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows):
    n = features.shape[0]
    x = np.asarray(features, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise ValueError(f"features has NaN or Inf values (first in row {bad})")
    mask = np.zeros(n, bool)
    if clean_idx is not None:
        y = y.copy()  # the trusted labels on the clean rows
        mask[clean_idx] = True
    else:
        x = np.concatenate([x, np.asarray(clean_features, dtype=np.float32)])
        y = np.concatenate([y, np.asarray(clean_labels, dtype=np.int64)])
        mask = np.concatenate([mask, np.ones(len(clean_labels), bool)])
    if x.shape[0] > KNN_MAX_ROWS:
        raise ValueError(f"scorer='knn' holds all rows in memory and compares every pair: at most {KNN_MAX_ROWS} rows, "
                         f"got {x.shape[0]}; use scorer='fbr-whiten' (streamed) for larger datasets")
    score, quality, suggested = neighbour_agreement(x, y, mask, num_classes=C, device=device,
                                                    chunk_rows=min(chunk_rows, 4096))
    clean_scores = score[mask]
    if clean_idx is None:  # the appended clean rows are not rows of the dataset
        score, quality, suggested = score[:n], quality[:n], suggested[:n]
    return score, quality, suggested, clean_scores


def find_label_issues(features, labels, *, clean_idx=None, clean_features=None, clean_labels=None,
                      num_classes: int | None = None, scorer: str = "auto", flag: str = "auto", alpha: float = 0.1,
                      threshold: float = 0.0, device="cpu", chunk_rows: int = 8192,
                      progress: bool = False) -> LabelIssues:
    """Rows of ``features`` (N×d) whose ``labels`` (N) are likely wrong, given a trusted subset.

    The clean subset is ``clean_idx`` (rows of ``features`` whose ``labels`` are trusted; never
    flagged) or ``clean_features`` / ``clean_labels``.  ``scorer`` and ``flag`` as in the module doc
    (``alpha``: the target false-discovery rate of ``flag="fdr"``; ``threshold``: the score threshold of
    ``flag="score"``).  Returns a ``LabelIssues``: cleanlab's columns, the raw score, the flagged set,
    the estimated noise rate and the settings."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    if flag not in FLAGS:
        raise ValueError(f"unknown flag {flag!r}; expected one of {', '.join(FLAGS)}")
    if (clean_idx is None) == (clean_features is None or clean_labels is None):
        raise ValueError("give the clean subset either as clean_idx or as clean_features and clean_labels (not both)")
    y, C = _check(features, labels, num_classes)
    if clean_idx is not None:
        clean_idx = _clean_rows(features.shape[0], clean_idx)
    scorer = "knn" if scorer == "auto" else scorer
    if scorer == "knn":
        score, quality, suggested, clean_scores = _knn(features, y, clean_idx, clean_features, clean_labels, C,
                                                       device, chunk_rows)
    else:
        cz, cy = (np.asarray(features[clean_idx]), y[clean_idx]) if clean_idx is not None else (clean_features, clean_labels)
        res = score_dataset(features, y, cz, cy, num_classes=C, chunk_rows=chunk_rows, device=device,
                            progress=progress, **_FBR[scorer])
        score, suggested = res.scores, res.suggested
        scale = float(np.median(np.abs(score))) or 1.0
        quality = 1.0 / (1.0 + np.exp(-score.astype(np.float64) / scale))
        if clean_idx is not None:
            clean_scores = score[clean_idx]
        else:  # the clean rows scored as the dataset's rows are (in sample, as with clean_idx)
            clean_scores = score_dataset(cz, cy, cz, cy, num_classes=C, chunk_rows=chunk_rows, device=device,
                                         **_FBR[scorer]).scores
    flag = ("fdr" if scorer == "knn" else "score") if flag == "auto" else flag
    return flag_rows(score, quality, suggested, y, clean_idx, clean_scores, C, flag, alpha, threshold,
                    {"scorer": scorer, "flag": flag, **({"alpha": alpha} if flag == "fdr" else {}),
                     **({"threshold": threshold} if flag == "score" else {})})
