"""``find_label_issues``: the public entry of label-issue finding (validate → score → flag).

Scorers (``SCORERS``):

* ``"knn"`` — neighbour agreement with trust (``neighbours.py``): the labels of each row's nearest
  rows by cosine, the clean rows counting more and every other row as much as its own label is
  believed; in memory, O(N²·d) (``KNN_MAX_ROWS`` rows at most).  The neighbourhood size is chosen on
  the clean rows: the one of ``KNN_NEIGHBOURS`` whose calibrated votes give their trusted labels the
  higher likelihood (``settings["neighbours"]``, and ``settings["neighbour_nll"]`` each size's mean
  negative log-likelihood).  With ``flag="confident"`` or ``"posterior"`` (the
  default) the votes are calibrated on the clean rows (``posterior.py``): ``label_score`` is the
  calibrated probability of the given label ``π_i(y_i)``, ``score`` its log-odds and the suggested label
  ``argmax_c π_ic``; on the comparison with cleanlab this ranks well above the raw vote share on
  cluster noise and within 0.003 AUROC of it elsewhere (docs/label-issues.md).  With the other flag
  rules they are the vote margin, the vote share and the vote's argmax.
* ``"fbr"`` — the FBR score of SPEC §3.4 against the clean subset's class means, streamed
  (``score_dataset``: any N, memory-mapped files); ``"fbr-whiten"`` adds the clean-fitted whitening
  and one refinement round.  Both shard rows across ``torch.distributed`` ranks (``process_group``).
* ``"auto"`` — ``"knn"`` for data of at most ``KNN_MAX_ROWS`` rows in one process (a memory map of at
  most ``KNN_MAX_MAPPED_BYTES`` is loaded for it), else ``"fbr-whiten"`` (``settings["scorer_reason"]``
  says which rule applied).  ``knn`` is first checked on the trusted rows (``probe.py``: half of them
  made ordinary rows, half of those given random wrong labels; ``settings["probe_auroc"]``); where its
  votes barely tell those wrong labels from the right ones (AUROC below ``probe.GUARD_AUROC``) and
  ``fbr-whiten`` does clearly better, ``auto`` scores with ``fbr-whiten`` instead and warns.  An
  explicit ``scorer="knn"``, or a flag rule that needs its votes, keeps ``knn`` and warns.

Flagging (``flag``):

* ``"confident"`` (``knn`` only; the default) flags as many rows as a count that does not assume
  class-conditional noise finds wrong (``posterior.confident_count``: the rows whose calibrated
  probability of another class reaches what the clean rows of that class get): the rows ``"posterior"``
  flags first (the most surely wrong first), then those whose calibrated probability of their own label
  is lowest; the estimated noise rate is the count's share;
* ``"posterior"`` (``knn`` only) flags the rows whose given label is more likely wrong than right under a
  noise model fitted to the dataset (``posterior.py``: the votes calibrated on the clean rows, a
  class-conditional transition matrix by EM) and reports that model's noise rate;
* ``"audit"`` (``knn`` only; needs an audit, ``clean_idx`` with ``clean_labels``) flags the rows whose
  probability of a wrong label, fitted on the audited rows against their scores, is at least one half
  (``audit.py``);
* ``"margin"`` (``knn`` only) flags the rows whose neighbours' vote for another class leads the vote for
  their own label by at least ``margin`` (``score <= -margin``);
* ``"fdr"`` flags the rows whose estimated false-discovery rate is at most ``alpha`` (``flag.py``: the
  clean rows' own scores estimate the score distribution of correct labels); ``"rate"`` the estimated
  number of wrong labels, lowest scores first; ``"score"`` every row with score ``<= threshold``;
* ``"auto"``: ``"confident"`` for ``"knn"``, ``"score"`` with threshold 0 for the FBR scorers.

Why ``"confident"`` by default (docs/label-issues.md, the same-features comparison with cleanlab): its
flagged set is at or above both cleanlab variants in precision and recall in all ten MNIST-5k cells at
25-30% noise on seeds 0-2 and on seeds 3-5, in 8 of the 10 at 10% noise, and in 17 of 20 on
scikit-learn's digits (``"posterior"``: 5, 4, 3 and 12; ``"margin"``: 8, 6, 2 and 10).  The posterior
alone is precise but, when labels flip where a sample looks like another class, the class-conditional
model takes most flips for honest ambiguity and flags too few; where the noise depends on the class
alone it flags a few percent more rows than are wrong.  The confident count does not rest on that
model and was the closer estimate in both cases, so the set takes its size.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from .audit import audit_share, fit_audit
from .audit import memory_bytes as audit_memory_bytes
from .flag import MODEL_FLAGS, flag_rows
from .neighbours import agreement_from_votes, neighbour_search, votes_by_k
from .probe import GUARD_AUROC, GUARD_MARGIN, probe_auroc, probe_folds
from .posterior import choose_neighbourhood, label_log_odds, noise_model
from .result import LabelIssues
from .shard import agree
from .stream import score_dataset
from . import validate as LV
from .validate import check_find_inputs

__all__ = ["find_label_issues", "SCORERS", "KNN_MAX_ROWS", "knn_memory_bytes"]

SCORERS = ("auto", "knn", "fbr", "fbr-whiten")
_FBR = {"fbr": dict(), "fbr-whiten": dict(whiten="auto", refine=1)}
FLAGS = ("auto", "confident", "margin", "posterior", "audit", "fdr", "rate", "score")
#: the clean vote (``posterior.py``): each row's this many nearest clean rows, at the knn temperature
POSTERIOR_CLEAN_K = 10
#: the neighbourhood sizes ``knn`` chooses from, by the clean rows' likelihood (``posterior.choose_neighbourhood``)
KNN_NEIGHBOURS = (10, 30)
KNN_MAX_ROWS = 200_000
#: a memory-mapped ``features`` is loaded whole for ``knn`` (by ``scorer="auto"``) only up to this size
KNN_MAX_MAPPED_BYTES = 1 << 30
#: rows of ``knn`` compared with every row at once (its similarities: this many × all rows)
KNN_CHUNK_ROWS = 4096


def _present_classes(labels, C: int):
    """``(present, compact)``: the classes of ``range(C)`` some label names, and the map from a class to its
    position among them; ``compact`` is ``None`` where nothing is dropped (every class named, or fewer than
    two: nothing to compare)."""
    present = np.unique(labels)
    if present.size == C or present.size < 2:
        return present, None
    compact = np.full(C, -1, np.int64)
    compact[present] = np.arange(present.size)
    return present, compact


def _knn(features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows, calibrated_columns: bool,
         posterior: bool, probe: bool = False):
    """``_knn_votes``' results over the classes some row holds: a class of ``range(C)`` that no label
    names has no evidence, and a column for it would still take a share of every softmax of the
    calibration (``posterior.py``), so its presence alone would move the calibration, the chosen
    neighbourhood and every score.  The absent classes get probability 0 and are never suggested."""
    every = y if clean_labels is None else np.concatenate([y, np.asarray(clean_labels, np.int64)])
    present, compact = _present_classes(every, C)
    if compact is None:
        return _knn_votes(features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows,
                          calibrated_columns, posterior, probe)
    score, quality, suggested, clean_scores, model, chosen, pi, tie_break = _knn_votes(
        features, compact[y], clean_idx, clean_features, None if clean_labels is None else compact[clean_labels],
        present.size, device, chunk_rows, calibrated_columns, posterior, probe)
    wide = np.zeros((pi.shape[0], C), pi.dtype)
    wide[:, present] = pi
    if model is not None:
        transition = np.eye(C, dtype=model.transition.dtype)  # an absent class: no row, no flip (a stochastic row)
        transition[np.ix_(present, present)] = model.transition
        model = model._replace(pi_argmax=present[model.pi_argmax], transition=transition)
    return score, quality, present[suggested], clean_scores, model, chosen, wide, tie_break


def _knn_votes(features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows, calibrated_columns: bool,
               posterior: bool, probe: bool = False):
    """``(score, quality, suggested, clean_scores, model, chosen, pi, tie_break)``: with ``calibrated_columns`` the columns of
    the calibrated probabilities (else of the raw vote); ``model`` is ``None`` unless ``posterior`` asks
    for it, else ``posterior.py``'s ``NoiseModel`` on the dataset's rows; ``chosen``
    the settings of the neighbourhood chosen on the clean rows (``KNN_NEIGHBOURS``); ``pi`` the
    calibrated class probabilities of the dataset's rows (N×C; a clean row's from its neighbours alone)."""
    n = features.shape[0]
    x = LV.float32_array(features)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise ValueError(LV.nonfinite_message("features", bad, features[bad]))
    mask = np.zeros(n, bool)
    if clean_idx is not None:
        y = y.copy()  # the trusted labels on the clean rows
        mask[clean_idx] = True
    else:
        x = np.concatenate([x, LV.float32_array(clean_features)])
        y = np.concatenate([y, np.asarray(clean_labels, dtype=np.int64)])
        mask = np.concatenate([mask, np.ones(len(clean_labels), bool)])
    if x.shape[0] > KNN_MAX_ROWS:
        raise ValueError(f"scorer='knn' holds all rows in memory and compares every pair: at most {KNN_MAX_ROWS} rows, "
                         f"got {x.shape[0]}; use scorer='fbr-whiten' (streamed) for larger datasets")
    chunk = min(chunk_rows, KNN_CHUNK_ROWS)
    found = neighbour_search(x, max(KNN_NEIGHBOURS), chunk_rows=chunk, device=device)

    def votes(labels_, mask_):  # ({k: P}, Q, (k, nll, calibration)): the votes under these labels and trusted rows
        P_by_k, Q = votes_by_k(found, labels_, mask_, num_classes=C, ks=KNN_NEIGHBOURS, chunk_rows=chunk,
                               clean_k=POSTERIOR_CLEAN_K)
        return P_by_k, Q, choose_neighbourhood(P_by_k, Q, labels_, mask_)

    P_by_k, Q, (k, nll, calibration) = votes(y, mask)
    chosen = {"neighbours": k, "neighbour_nll": {str(j): round(v, 4) for j, v in nll.items()}}
    if probe:  # probe.py: the trusted rows, half of them made ordinary rows with some labels changed
        def fold_scores(fold):
            labels_, mask_ = y.copy(), mask.copy()
            labels_[fold.rows], mask_[fold.rows] = fold.given, False
            pi_fold = votes(labels_, mask_)[2][2][0]
            return pi_fold[fold.rows, fold.given]

        chosen["probe_auroc"] = round(probe_auroc(probe_folds(np.flatnonzero(mask), y), fold_scores), 4)
    model = None
    if calibrated_columns:  # the calibrated probabilities rank better than the raw vote (find_label_issues' doc)
        pi = calibration[0]
        quality, suggested = pi[np.arange(y.size), y], pi.argmax(1)
        score = calibrated_log_odds(quality)
        # rows whose clipped log-odds tie (π beyond 1e-12 of 0 or 1) are ranked by the exact ones
        tie_break = label_log_odds(P_by_k[k], Q, calibration[1], y)
        if posterior:
            model = noise_model(calibration, y, mask)
            model = model._replace(post_given=model.post_given[:n], pi_given=model.pi_given[:n],
                                   pi_argmax=model.pi_argmax[:n])
    else:
        score, quality, suggested = agreement_from_votes(P_by_k[k], y)
        tie_break = None
    clean_scores = score[mask]
    if clean_idx is None:  # the appended clean rows are not rows of the dataset
        score, quality, suggested = score[:n], quality[:n], suggested[:n]
        tie_break = None if tie_break is None else tie_break[:n]
    return score, quality, suggested, clean_scores, model, chosen, calibration[0][:n], tie_break


def _fbr(features, y, clean_idx, clean_features, clean_labels, C, scorer, device, chunk_rows, progress, process_group):
    """``(score, quality, suggested, clean_scores)`` of the streamed FBR scorer ``scorer``."""
    if clean_idx is not None:  # checked finite by _checked_call
        cz, cy = LV.rows_of(features, clean_idx), y[clean_idx]
    else:
        cz, cy = clean_features, clean_labels
    res = score_dataset(features, y, cz, cy, num_classes=C, chunk_rows=chunk_rows, device=device,
                        progress=progress, process_group=process_group, clean_rows=clean_idx, **_FBR[scorer])
    score, suggested = res.scores, res.suggested
    _warn_if_flat(score, clean_idx, scorer)
    scale = float(np.median(np.abs(score))) or 1.0
    quality = 1.0 / (1.0 + np.exp(-score.astype(np.float64) / scale))
    if clean_idx is not None:
        clean_scores = res.clean_scores  # out of sample: each clean row without its share of its class mean
    else:  # the clean rows scored as a dataset of their own, out of sample; M rows, small: every rank
        # scores them itself, the same arithmetic as one process (no collectives)
        clean_scores = score_dataset(cz, cy, cz, cy, num_classes=C, chunk_rows=chunk_rows, device=device,
                                     clean_rows=np.arange(len(cy)), **_FBR[scorer]).clean_scores
    return score, quality, suggested, clean_scores[np.isfinite(clean_scores)]


def _warn_if_flat(score: np.ndarray, clean_idx, scorer: str) -> None:
    """Warn when every row that may be flagged (not trusted) scored the same (constant or all-zero
    features): the threshold then flags all of them or none and the estimated noise rate reads 0, which
    look like results but rank nothing (``knn`` warns in that case through its probe)."""
    others = score if clean_idx is None else np.delete(score, clean_idx)
    if others.size > 1 and float(others.min()) == float(others.max()):
        warnings.warn(f"scorer={scorer!r}: every row scored {float(others[0]):.4g}, so the scores rank nothing and the "
                      "flagged set and the estimated noise rate carry no information: the features do not tell the "
                      "clean subset's classes apart (constant or all-zero features?)", UserWarning, stacklevel=3)


def _stacked_float32(features, clean_features) -> np.ndarray:
    """The rows of ``features`` then those of ``clean_features`` in one float32 array, each copied once
    (a memory map is read straight into it, never held twice)."""
    n, m = features.shape[0], clean_features.shape[0]
    out = np.empty((n + m, features.shape[1]), np.float32)
    for rows, a in ((slice(0, n), features), (slice(n, n + m), clean_features)):
        if isinstance(a, torch.Tensor):
            out[rows] = LV.float32_array(a)
        else:
            with np.errstate(over="ignore"):  # beyond float32: Inf, which the scorer reports by row
                out[rows] = a
    return out


def _fbr_probe(features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows) -> float:
    """``probe.py``'s AUROC for ``fbr-whiten`` (the fallback of ``scorer="auto"``) on the same trusted rows."""
    if clean_idx is not None:
        x_all, y_all, trusted = features, y, clean_idx
    else:  # the separate trusted rows appended, as knn appends them
        x_all = _stacked_float32(features, clean_features)
        y_all = np.concatenate([y, np.asarray(clean_labels, np.int64)])
        trusted = np.arange(len(y), len(y_all))

    def fold_scores(fold):
        labels_ = np.array(y_all, copy=True)
        labels_[fold.rows] = fold.given
        res = score_dataset(x_all, labels_, LV.rows_of(x_all, fold.trusted), y_all[fold.trusted], num_classes=C,
                            chunk_rows=chunk_rows, device=device, on_missing_class="skip", **_FBR["fbr-whiten"])
        return res.scores[fold.rows]

    return probe_auroc(probe_folds(trusted, y_all), fold_scores)


def _guard(knn_auroc: float, fallback_auroc: float, requested_scorer: str, requested_flag: str, margin, threshold,
           audited: bool):
    """``probe.py``'s guard: the flag rule and threshold of ``fbr-whiten`` when ``scorer="auto"`` should give
    up ``knn`` for it, else ``None`` (after a warning that the label scores may carry little)."""
    if requested_scorer == "auto" and fallback_auroc >= knn_auroc + GUARD_MARGIN:
        try:
            rule = _choose_flag(requested_flag, "fbr-whiten", margin, threshold, audited)
        except ValueError:  # the flag rule asked for needs knn's votes
            rule = None
        if rule is not None:
            warnings.warn(f"scorer='auto': knn's neighbour votes told the trusted rows' right labels from random wrong "
                          f"ones with AUROC {knn_auroc:.2f} only, fbr-whiten's scores with {fallback_auroc:.2f}: "
                          "scoring with fbr-whiten (the features' nearest rows do not follow their classes; "
                          "see settings['scorer_reason'])", stacklevel=3)
            return rule
    warnings.warn(f"the label scores may carry little: knn's neighbour votes told the trusted rows' right labels from "
                  f"random wrong ones with AUROC {knn_auroc:.2f}, fbr-whiten's scores with {fallback_auroc:.2f} "
                  "(probe.py; 0.5 is chance). The features' nearest rows may not follow their classes; features "
                  "from a model trained on these classes, or scorer='fbr-whiten', may do better", stacklevel=3)
    return None


def _audit(given, y, clean_idx, pi):
    """``audit.py``'s estimate: score-assisted with ``knn``'s calibrated probabilities ``pi``, else the
    audit's share.  ``given`` the dataset's labels, ``y`` with the verified ones on the ``clean_idx`` rows."""
    wrong = given[clean_idx] != y[clean_idx]
    if not wrong.any():
        warnings.warn(f"clean_labels agree with labels on all {wrong.size} clean_idx rows: the audit found no wrong "
                      "label, and the noise rate it reports is 0. If labels already hold the verified labels on "
                      "those rows, pass clean_idx alone (an audit needs the labels the dataset gave them)",
                      UserWarning, stacklevel=3)
    if pi is None:
        return audit_share(wrong)
    others = np.ones(y.size, bool)
    others[clean_idx] = False
    rows = np.flatnonzero(others)
    return fit_audit(calibrated_log_odds(pi[clean_idx, given[clean_idx]]), wrong,
                     calibrated_log_odds(pi[rows, y[rows]]))


def calibrated_log_odds(pi_given: np.ndarray) -> np.ndarray:
    """``log(π / (1 − π))`` of the calibrated probability of the given label: the knn score with a noise
    model (in [−27.6, 27.6]: π clipped to [1e-12, 1 − 1e-12])."""
    p = np.clip(np.asarray(pi_given, np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _choose_scorer(scorer: str, features, clean_features, process_group) -> tuple[str, str]:
    """``(scorer, why)``: ``"auto"`` resolved as ``find_label_issues`` documents; a named scorer is
    kept (``"knn"`` refused with a ``process_group``: its neighbour search compares every row with
    every row in one process, and is not sharded)."""
    rows = features.shape[0] + (0 if clean_features is None else clean_features.shape[0])
    in_memory = not isinstance(features, np.memmap)
    if scorer != "auto":
        if scorer == "knn" and process_group is not None:
            raise ValueError("process_group: scorer='knn' runs in one process only (it compares every row with "
                             "every row in memory); use scorer='fbr' or 'fbr-whiten' to shard rows across ranks, "
                             "or process_group=None")
        return scorer, "named by the caller"
    if process_group is not None:
        return "fbr-whiten", "auto: a process_group shards the rows, and knn runs in one process only"
    if rows > KNN_MAX_ROWS:
        return "fbr-whiten", f"auto: {rows} rows > KNN_MAX_ROWS = {KNN_MAX_ROWS} (knn compares every pair in memory)"
    if not in_memory:
        size = rows * features.shape[1] * 4  # knn holds the rows as float32
        if size > KNN_MAX_MAPPED_BYTES:
            return "fbr-whiten", (f"auto: features is a memory map of {size / 2**20:.0f} MiB as float32 > "
                                  f"KNN_MAX_MAPPED_BYTES = {KNN_MAX_MAPPED_BYTES / 2**20:.0f} MiB, streamed rather "
                                  "than loaded whole for knn")
        return "knn", (f"auto: {rows} rows <= KNN_MAX_ROWS = {KNN_MAX_ROWS}, the memory map loaded for knn "
                       f"({size / 2**20:.0f} MiB as float32)")
    return "knn", f"auto: {rows} rows <= KNN_MAX_ROWS = {KNN_MAX_ROWS}, features in memory"


def knn_memory_bytes(n: int, d: int, c: int, chunk_rows: int = 8192, posterior: bool = True, audited: int = 0) -> int:
    """About the memory ``scorer="knn"`` holds for ``n`` rows (dataset plus separate clean rows) of ``d``
    features and ``c`` classes: the rows as float32 and their standardised copy, one chunk's similarities
    to every row (``min(chunk_rows, KNN_CHUNK_ROWS)`` rows at a time), each row's ``max(KNN_NEIGHBOURS)``
    nearest rows (similarity and index), the class votes of every neighbourhood size and the clean
    vote (float32), and the choice of the size (in float64: both votes, their logs, the logits and the
    class probabilities, and the best size's class probabilities so far), the same again for the probe of
    the trusted rows (``probe.py``); with ``posterior`` (``flag="confident"`` or ``"posterior"``; the default) also,
    in float64, both votes, their logs, the class probabilities, the EM's posterior and one temporary of
    its size, and the confident count's mask (bool) and masked copy of the probabilities; with ``audited``
    rows of an audit (``clean_idx`` with ``clean_labels``) also ``audit.memory_bytes``."""
    chunk = min(chunk_rows, KNN_CHUNK_ROWS, n)
    search = 4 * (2 * n * d + 2 * chunk * n) + n * max(KNN_NEIGHBOURS) * (4 + 8)
    votes = 4 * n * c * (len(KNN_NEIGHBOURS) + 3)  # P of each size, Q, one round's votes and their trust
    choose = 8 * n * c * 7
    probe = votes + choose  # probe.py: one half's votes and calibration at a time, beside the dataset's
    return (search + votes + choose + probe + (n * c * (8 * 2 + 8 * 2 + 8 * 4 + 1 + 8) if posterior else 0)
            + (audit_memory_bytes(n, audited) if audited else 0))


def _choose_flag(flag: str, scorer: str, margin, threshold: float, audited: bool) -> tuple[str, float]:
    """``(flag, threshold)``: the rule ``"auto"`` stands for with ``scorer``; ``"margin"`` checked before
    any scoring and turned into its fixed threshold ``-margin`` (``flag_rows`` then flags as for ``"score"``)."""
    flag = ("confident" if scorer == "knn" else "score") if flag == "auto" else flag
    if flag in MODEL_FLAGS + ("audit",) and scorer != "knn":
        raise ValueError(f"flag={flag!r} needs the class votes of scorer='knn', got scorer={scorer!r}")
    if flag == "audit" and not audited:
        raise ValueError("flag='audit' needs an audit: clean_idx together with clean_labels, the verified labels of "
                         "those rows (labels keeps the labels the dataset gave them)")
    if flag == "margin":
        if scorer != "knn":
            raise ValueError(f"flag='margin' needs the vote shares of scorer='knn', got scorer={scorer!r}")
        # numbers.Real: numpy scalars (np.float32(0.3)) are numbers too; bools are not margins
        if isinstance(margin, (bool, np.bool_)) or not isinstance(margin, numbers.Real) or not 0 <= margin < 2:
            raise ValueError(f"margin must be a number in [0, 2) (a lead of one vote share over another), got {margin!r}")
        threshold = -float(margin)
    return flag, threshold


def _checked_call(features, labels, clean_idx, clean_features, clean_labels, num_classes, scorer, flag, threshold,
                  margin, device, chunk_rows, process_group):
    """``find_label_issues``' arguments checked and resolved, before any scoring or collective."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    if flag not in FLAGS:
        raise ValueError(f"unknown flag {flag!r}; expected one of {', '.join(FLAGS)}")
    if clean_idx is not None and clean_features is not None:
        raise ValueError("give the clean subset either as clean_idx (with clean_labels for an audit) or as "
                         "clean_features and clean_labels, not both")
    if clean_idx is None and (clean_features is None or clean_labels is None):
        raise ValueError("the clean subset is missing: give clean_idx (rows of features, with clean_labels for an "
                         "audit), or clean_features and clean_labels")
    LV.check_device(device)
    chunk_rows = LV.check_positive_int("chunk_rows", chunk_rows)
    threshold = LV.check_real("threshold", threshold, "the score threshold of flag='score'")
    features, clean_features = LV.detached(features), LV.detached(clean_features)
    given, C, clean_idx, verified = check_find_inputs(features, labels, clean_idx, clean_features, clean_labels,
                                                      num_classes)
    y = given
    if verified is not None:  # an audit: the clean rows are scored, and vote, with their verified labels
        y = given.copy()
        y[clean_idx] = verified
        clean_labels = None
    requested_scorer, requested_flag = scorer, flag
    scorer, reason = _choose_scorer(scorer, features, clean_features, process_group)
    flag, threshold = _choose_flag(flag, scorer, margin, threshold, verified is not None)
    if scorer in ("fbr", "fbr-whiten") and clean_idx is not None:
        # the user gave these rows as rows of features: a bad one is named so, not as score_dataset's clean_features
        cz = LV.rows_of(features, clean_idx)
        LV.check_finite_rows("features", torch.as_tensor(LV.float32_array(cz)), cz, row_names=clean_idx,
                             where="a clean_idx row")
    return (features, clean_features, given, y, C, clean_idx, verified, clean_labels, chunk_rows, threshold, scorer,
            reason, flag, requested_scorer, requested_flag)


def find_label_issues(features, labels, *, clean_idx=None, clean_features=None, clean_labels=None,
                      num_classes: int | None = None, scorer: str = "auto", flag: str = "auto", alpha: float = 0.1,
                      threshold: float = 0.0, margin: float = 0.35, device="cpu", chunk_rows: int = 8192,
                      progress: bool = False, process_group=None) -> LabelIssues:
    """Rows of ``features`` (N×d) whose ``labels`` (N) are likely wrong, given a trusted subset.

    The clean subset is ``clean_idx`` (rows of ``features`` whose ``labels`` are trusted; never
    flagged) or ``clean_features`` / ``clean_labels``.  ``clean_idx`` with ``clean_labels`` is an
    audit: ``clean_labels[j]`` is the verified label of row ``clean_idx[j]``, and ``labels`` keeps the
    label the dataset gave it.  The audited rows are scored, vote and are reported with their verified
    labels (the ranking and the flagged set are those of the same call with the verified labels
    written into ``labels``), and the audit gives the estimated noise rate with an interval
    (``audit.py``: with ``knn`` a score-assisted estimate, else the audit's share; ``settings["audit"]``;
    the flag rule's own estimate in ``settings["rule_noise_rate"]``), which ``flag="fdr"`` and ``"rate"``
    then use.  ``scorer`` and ``flag`` as in the module doc
    (``alpha``: the target false-discovery rate of ``flag="fdr"``; ``threshold``: the score threshold of
    ``flag="score"``; ``margin``: the vote lead of ``flag="margin"``).  Returns a ``LabelIssues``:
    cleanlab's columns, the raw score, the flagged set, the estimated noise rate and the settings.

    ``scorer="auto"`` picks ``"knn"`` when every row it would compare (the dataset's, plus
    ``clean_features``' when given) fits in ``KNN_MAX_ROWS``, ``features`` is held in memory or is a
    ``numpy.memmap`` of at most ``KNN_MAX_MAPPED_BYTES`` as float32 (then loaded whole), and no
    ``process_group`` is given; otherwise the streamed ``"fbr-whiten"``.  ``settings["scorer"]`` records
    the choice and ``settings["scorer_reason"]`` why; where ``knn``'s probe on the trusted rows finds its
    votes carry nothing and ``fbr-whiten``'s carry more, ``auto`` runs ``fbr-whiten`` (module doc).

    ``process_group`` (``None``, ``"world"`` or a ``torch.distributed`` group; that of
    ``score_dataset``'s ``Execution``) shards the FBR scorers' rows across the group's ranks: every
    rank passes the same arguments and returns the full result, equal to one process's (see
    ``stream.py``).  ``"knn"`` runs in one process only and refuses a ``process_group``."""
    error = None
    try:  # every check before any collective: the ranks of a process_group agree on the outcome (shard.agree)
        (features, clean_features, given, y, C, clean_idx, verified, clean_labels, chunk_rows, threshold, scorer,
         reason, flag, requested_scorer, requested_flag) = _checked_call(
            features, labels, clean_idx, clean_features, clean_labels, num_classes, scorer, flag, threshold, margin,
            device, chunk_rows, process_group)
    except Exception as exc:  # noqa: BLE001 - raised again by agree, on this rank
        error = exc
    try:
        agree(process_group, error, "its arguments", device)
    finally:
        error = None  # see shard.agree: no cycle through the traceback
    pi, chosen, tie_break = None, {}, None
    if scorer == "knn":
        score, quality, suggested, clean_scores, model, chosen, pi, tie_break = _knn(
            features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows,
            calibrated_columns=flag in MODEL_FLAGS + ("audit",), posterior=flag in MODEL_FLAGS, probe=True)
        if chosen.get("probe_auroc", float("nan")) < GUARD_AUROC:  # probe.py: the votes barely tell a wrong label from a right one
            fallback = round(_fbr_probe(features, y, clean_idx, clean_features, clean_labels, C, device, chunk_rows), 4)
            chosen["fbr_whiten_probe_auroc"] = fallback
            switched = _guard(chosen["probe_auroc"], fallback, requested_scorer, requested_flag, margin, threshold,
                              verified is not None)
            if switched is not None:
                (flag, threshold), scorer, pi, tie_break = switched, "fbr-whiten", None, None
                reason = (f"knn's neighbour votes told the trusted rows' right labels from random wrong ones with AUROC "
                          f"{chosen['probe_auroc']:.2f}, fbr-whiten's scores with {fallback:.2f} (probe.py)")
                chosen = {"knn_probe_auroc": chosen["probe_auroc"], "fbr_whiten_probe_auroc": fallback}
    if scorer != "knn":
        model = None
        score, quality, suggested, clean_scores = _fbr(features, y, clean_idx, clean_features, clean_labels, C, scorer,
                                                       device, chunk_rows, progress, process_group)
    audit = None if verified is None else _audit(given, y, clean_idx, pi)
    issues = flag_rows(score, quality, suggested, y, clean_idx, clean_scores, C, flag, alpha, threshold, model, audit,
                       {"scorer": scorer, "scorer_reason": reason, "flag": flag, **chosen,
                        **({"alpha": alpha} if flag == "fdr" else {}),
                        **({"threshold": threshold} if flag == "score" else {}),
                        **({"margin": float(margin)} if flag == "margin" else {})})
    issues.tie_break = tie_break
    return issues
