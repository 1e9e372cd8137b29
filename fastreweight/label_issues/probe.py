"""A check of a scorer on the trusted rows alone: do its scores tell a wrong label from a right one here?

``find_label_issues``' default scorer, ``knn``, trusts the features' neighbourhoods.  Where a few shared
directions of large variance dominate the features (an embedding's common offset, a nuisance factor),
every row's nearest rows are near for reasons unrelated to its class, and the votes carry nothing: on a
synthetic mixture whose class signal is a tenth of such a nuisance, its ranking of the wrong labels had
an AUROC of 0.51 and the default rule flagged 98% of the rows.  The streamed FBR scorer with whitening
(``fbr-whiten``) removes exactly those directions and ranked the same rows at 0.98.

The probe finds this out from the trusted rows before anything is reported:

1. the trusted rows of each class are split in two halves (alternate rows of the class; a class with
   a single trusted row keeps it trusted);
2. in turn, one half stays trusted and the other becomes ordinary rows of the dataset, half of them
   (drawn with a fixed seed) given a wrong label, a random other class among those some label names
   (a class no row holds is no confusion a scorer could meet, and the draw then does not depend on
   ``num_classes``);
3. the scorer runs as it would on the dataset, and the AUROC of its label scores for those rows, right
   labels against wrong, is averaged over the two turns (``probe_auroc``).

A label changed at random is the easiest kind of wrong label to find; a scorer that cannot find these
finds none.  ``find_label_issues`` with ``scorer="auto"`` gives up ``knn`` for ``fbr-whiten`` when
``knn``'s probe AUROC is below ``GUARD_AUROC`` and ``fbr-whiten``'s is at least ``GUARD_MARGIN`` higher,
and warns when neither does well.  On the label-issue benchmark's cells (MNIST-5k and digits, PCA
features, seeds 0–1, seven noise kinds) ``knn``'s probe AUROC was 0.978–1.000 (a scratch run, not
committed), so the guard leaves those results as they were.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ProbeFold", "probe_folds", "probe_auroc", "auroc", "GUARD_AUROC", "GUARD_MARGIN", "SEED"]

#: below this probe AUROC the neighbour votes are taken to carry too little to be trusted
GUARD_AUROC = 0.8
#: how much better the fallback's probe AUROC must be before ``auto`` switches to it
GUARD_MARGIN = 0.1
#: the wrong labels of the probe are drawn with this seed (the result is the same on every call)
SEED = 0


class ProbeFold(NamedTuple):
    """One turn: ``rows`` (indices) become ordinary rows with ``given`` labels, ``wrong`` where they were
    changed; ``trusted`` the rows that stay trusted."""
    rows: np.ndarray
    given: np.ndarray
    wrong: np.ndarray
    trusted: np.ndarray


def probe_folds(clean_idx: np.ndarray, labels: np.ndarray) -> list[ProbeFold]:
    """The two turns of the module doc (none where no class has two trusted rows); ``labels`` of every row
    (trusted on ``clean_idx``), at least two classes among them."""
    clean_idx = np.asarray(clean_idx, np.int64)
    present = np.unique(np.asarray(labels, np.int64))
    yc = np.asarray(labels)[clean_idx]
    halves: list[list[int]] = [[], []]
    for c in np.unique(yc):
        rows = clean_idx[yc == c]
        if rows.size >= 2:
            halves[0] += rows[0::2].tolist()
            halves[1] += rows[1::2].tolist()
    rng = np.random.default_rng(SEED)
    folds = []
    for half in halves:
        rows = np.array(sorted(half), np.int64)
        if rows.size < 2:
            continue
        wrong = np.zeros(rows.size, bool)
        wrong[rng.permutation(rows.size)[: rows.size // 2]] = True
        given = np.asarray(labels)[rows].astype(np.int64).copy()
        at = np.searchsorted(present, given[wrong])  # positions among the present classes
        given[wrong] = present[(at + rng.integers(1, present.size, int(wrong.sum()))) % present.size]
        folds.append(ProbeFold(rows, given, wrong, np.setdiff1d(clean_idx, rows)))
    return folds


def auroc(right: np.ndarray, wrong: np.ndarray) -> float:
    """P(a right label's score > a wrong label's), ties counted half (Mann–Whitney); nan if either is empty."""
    right, wrong = np.asarray(right, np.float64), np.asarray(wrong, np.float64)
    if right.size == 0 or wrong.size == 0:
        return float("nan")
    both = np.concatenate([right, wrong])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(both.size, np.float64)
    ranks[order] = np.arange(1, both.size + 1)
    # average ranks over ties
    sorted_vals = both[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], both.size]
    for a, b in zip(starts, ends):
        if b - a > 1:
            ranks[order[a:b]] = (a + 1 + b) / 2.0
    u = ranks[: right.size].sum() - right.size * (right.size + 1) / 2.0
    return float(u / (right.size * wrong.size))


def probe_auroc(folds: list[ProbeFold], score_fold) -> float:
    """The mean over ``folds`` of the AUROC of ``score_fold(fold)`` (the label scores of ``fold.rows``
    under ``fold.given``; higher: more likely right), right labels against wrong; nan without folds."""
    values = []
    for fold in folds:
        s = np.asarray(score_fold(fold), np.float64)
        values.append(auroc(s[~fold.wrong], s[fold.wrong]))
    return float(np.mean(values)) if values else float("nan")
