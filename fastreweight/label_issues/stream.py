"""Dataset-scale label-issue scoring: every sample against the clean subset, in streamed chunks.

``score_dataset`` reads the training features a chunk of rows at a time (``.npy`` files are
memory-mapped, ``.pt`` tensors loaded with ``torch.load(weights_only=True, mmap=True)``), scores each
chunk with ``fastreweight.weights.class_similarity`` (SPEC §3.1–3.3) and the FBR score of SPEC §3.4,
and keeps only the per-sample results.  Samples with the lowest scores are the likeliest label issues.

Memory bound (bytes, beyond the memory-mapped input files, which the OS pages in and out):

    chunk_rows·d·(itemsize + 4)       one chunk as read, and as float32 on the device
  + M·d·4                             the clean subset (float32) on the device
  + chunk_rows·C·4·3                  S and its epilogue temporaries
  + the backend's working set          reference pairwise: ≤ 2^24 floats (64 MiB); prototype: C·d·4
  + N·(8 + 4 + 8)                     labels, scores and suggested labels of the whole dataset

so it is independent of N but for the last line (20 bytes a sample).  ``memory_bound_bytes`` returns it.
With ``whiten`` (see ``fastreweight.whiten``) the features are read twice — once for their mean and
covariance, once to score — and the bound grows by ``4·d²·8`` bytes (covariance, eigenvectors,
transform, workspace) plus ``8·8·max(2^20, M·max(d, C))`` bytes for the leave-one-out criterion;
with ``refine`` the rows are read once more per round and the bound grows by ``2·C·(d + 1)·8`` bytes
(per-class sums and counts).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
import torch

from .. import validate as V
from .. import whiten as _whiten
from ..scores import class_similarity, fbr_from_similarity

_NPY = (".npy",)
_PT = (".pt", ".pth")


def load_array(path: str, name: str):
    """A 1-D/2-D array from an ``.npy`` or ``.pt`` file, memory-mapped, never unpickling code."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path to a .npy or .pt file, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{name}: no such file {path!r}")
    if path.endswith(_NPY):
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{name}: {path!r} is not a plain numeric .npy array ({exc})") from None
    if path.endswith(_PT):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ValueError(f"{name}: {path!r} could not be loaded as a tensor with weights_only=True ({exc})") from None
        if not isinstance(obj, torch.Tensor):
            raise TypeError(f"{name}: {path!r} must hold a single tensor, got {type(obj).__name__}")
        return obj
    raise ValueError(f"{name} must be a .npy or .pt file, got {path!r}")


def _as_tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.array(a))  # a copy: memory-maps are read-only, and the chunk is bounded
    raise TypeError(f"expected a torch.Tensor or numpy array, got {type(a).__name__}")


def _check_rows(name: str, a, want_dim: int):
    if not isinstance(a, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    if a.ndim != want_dim:
        shape = "[N, d]" if want_dim == 2 else "[N]"
        raise ValueError(f"{name} must be {want_dim}-D of shape {shape}, got shape {tuple(a.shape)}")


@dataclass
class ScoreResult:
    scores: np.ndarray  # N, float32: FBR score (low = suspected label issue)
    suggested: np.ndarray  # N, int64: the present class with the highest similarity
    labels: np.ndarray  # N, int64: the given labels
    whitening: dict | None = None  # with ``whiten``: the strength used and the leave-one-out criterion
    refinement: dict | None = None  # with ``refine``: rounds and pseudo-clean rows of the last round


    def ranking(self) -> np.ndarray:
        """Sample indices from most to least suspicious (stable for ties)."""
        return np.argsort(self.scores, kind="stable")


def memory_bound_bytes(n: int, d: int, m: int, c: int, chunk_rows: int, itemsize: int = 4, whiten: bool = False,
                       refine: bool = False) -> int:
    extra = (4 * d * d * 8 + 8 * 8 * max(1 << 20, m * max(d, c)) if whiten else 0) + (2 * c * (d + 1) * 8 if refine else 0)
    return chunk_rows * d * (itemsize + 4) + m * d * 4 + chunk_rows * c * 12 + (1 << 24) * 4 + n * 20 + extra


def score_dataset(
    features,
    labels,
    clean_features,
    clean_labels,
    *,
    num_classes: int | None = None,
    chunk_rows: int = 8192,
    shift: str = "max",
    alpha: float = 0.0,
    center: str = "clean",
    normalize: str | None = None,
    device="cpu",
    backend: str = "auto",
    strategy: str = "auto",
    on_missing_class: str = "skip",
    whiten: str | float | None = None,
    refine: int = 0,
    progress: bool = False,
) -> ScoreResult:
    """Score all N rows of ``features`` (N×d, array or memory-map) against the clean subset.

    ``whiten``: ``None`` scores the features as given (SPEC §3); a number ``t > 0`` or ``"auto"``
    first maps features and clean features through the spectral-shrinkage whitening of
    ``fastreweight.whiten`` (``"auto"`` picks ``t``, or the plain features, by leave-one-out on the
    clean subset).  With ``center="clean"`` and no cosine normalisation the map is folded into the
    clean class means (``Whitening.folded_means``), so the scored rows are never transformed; otherwise
    every chunk is mapped.  ``ScoreResult.whitening`` records the choice.

    ``refine``: rounds of re-scoring against class means of the clean rows together with the rows
    the previous pass scored > 0 under their given labels (pseudo-clean rows; one more streamed pass
    each).  The clean side stays the clean subset's classes; ``normalize="cosine"`` is not supported
    with it.  ``ScoreResult.refinement`` records the rounds and the pseudo-clean rows used."""
    _check_rows("features", features, 2)
    _check_rows("labels", labels, 1)
    _check_rows("clean_features", clean_features, 2)
    _check_rows("clean_labels", clean_labels, 1)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    whiten = _whiten.check_whiten(whiten)
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be an int >= 0 (rounds of re-scoring), got {refine!r}")
    if refine and normalize not in (None, "none"):
        raise ValueError(f"refine needs normalize=None: its prototypes are plain class means, got normalize={normalize!r}")
    V.check_option("shift", shift, V.SHIFT_OPTIONS)
    V.check_option("center", center, V.CENTER_OPTIONS)
    alpha = V.check_alpha(alpha)
    N, d = features.shape
    if labels.shape[0] != N:
        raise ValueError(f"labels must have one entry per row of features ({N}), got {labels.shape[0]}")
    if clean_labels.shape[0] != clean_features.shape[0]:
        raise ValueError(
            f"clean_labels must have one entry per row of clean_features ({clean_features.shape[0]}), got {clean_labels.shape[0]}"
        )
    if clean_features.shape[1] != d:
        raise ValueError(f"clean_features must have {d} columns like features, got shape {tuple(clean_features.shape)}")
    device = torch.device(device)
    y_all = _as_tensor(labels)
    if y_all.is_floating_point():
        raise TypeError(f"labels must be integers, got {y_all.dtype}")
    y_all = y_all.to(torch.int64)
    cz = _as_tensor(clean_features).to(device=device, dtype=torch.float32)
    cy = _as_tensor(clean_labels)
    if cy.is_floating_point():
        raise TypeError(f"clean_labels must be integers, got {cy.dtype}")
    cy = cy.to(device=device, dtype=torch.int64)
    if num_classes is None:
        num_classes = int(max(int(y_all.max()) if N else 0, int(cy.max()) if cy.numel() else 0)) + 1

    whitening = None
    folded = False  # the whitening folded into the class means: rows are scored as they are
    if whiten is not None:
        whitening = _fit_whitening(features, N, chunk_rows, cz, cy, num_classes, device, progress,
                                   whiten=whiten, center=center, shift=shift, alpha=alpha)
        if whitening.matrix is not None and center == "clean" and normalize in (None, "none"):
            folded = True
        else:
            cz = whitening.apply(cz)
    side = (lambda z, y: whitening.folded_means(z, y, num_classes)) if folded else (lambda z, y: (z, y))

    score_pass = dict(features=features, y_all=y_all, chunk_rows=chunk_rows,
                      whitening=None if folded else whitening, device=device,
                      progress=progress, sim_kw=dict(num_classes=num_classes, center=center, normalize=normalize,
                                                     strategy=strategy, backend=backend,
                                                     on_missing_class=on_missing_class),
                      shift=shift, alpha=alpha)
    scores, suggested, sums = _score_pass(*side(cz, cy), accumulate=refine > 0, desc="scoring", **score_pass)
    refinement = None
    for round_ in range(refine):
        # SPEC §3's prototypes from more rows: the clean rows together with the rows the last pass
        # scored > 0 under their given labels; one row per present class stands for its mean
        csum = torch.zeros_like(sums[0]).index_add_(0, cy, cz.to(torch.float64))
        ccount = torch.bincount(cy, minlength=num_classes).to(torch.float64)
        present_cls = torch.nonzero(ccount > 0).flatten()
        total = (csum + sums[0])[present_cls] / (ccount + sums[1])[present_cls, None]
        refinement = {"rounds": round_ + 1, "pseudo_clean_rows": int(sums[1].sum())}
        last = round_ == refine - 1
        scores, suggested, sums = _score_pass(*side(total.to(torch.float32), present_cls), accumulate=not last,
                                              desc=f"refining {round_ + 1}/{refine}", **score_pass)
    return ScoreResult(scores=scores, suggested=suggested, labels=y_all.numpy(),
                       whitening=None if whitening is None else whitening.describe(), refinement=refinement)


def _score_pass(cz, cy, *, features, y_all, chunk_rows, whitening, device, progress, sim_kw, shift, alpha,
                accumulate, desc):
    """One streamed pass: FBR score and suggested class of every row against the clean side
    ``(cz, cy)``; with ``accumulate``, also the per-class sum and count of the (transformed) rows that
    score > 0 under their given label."""
    N = y_all.shape[0]
    C = sim_kw["num_classes"]
    scores = np.empty(N, dtype=np.float32)
    suggested = np.empty(N, dtype=np.int64)
    present = torch.bincount(cy.clamp(0, C - 1), minlength=C) > 0
    sums = None
    for start in _chunk_starts(N, chunk_rows, progress, desc):
        stop = min(N, start + chunk_rows)
        x = _as_tensor(features[start:stop]).to(device=device, dtype=torch.float32)
        if whitening is not None:
            x = whitening.apply(x)
        y = y_all[start:stop].to(device)
        S = class_similarity(x, y, cz, cy, **sim_kw)
        dch = fbr_from_similarity(S, y, present, shift=shift, alpha=alpha)
        best = torch.where(present[None, :], S, S.new_full((), float("-inf"))).argmax(dim=1)
        if accumulate:
            if sums is None:
                sums = (torch.zeros(C, x.shape[1], dtype=torch.float64, device=device),
                        torch.zeros(C, dtype=torch.float64, device=device))
            # rows scored > 0 (labels out of range never are kept); a masked add, so no boolean
            # indexing and no host synchronisation per chunk
            keep = ((dch > 0) & (y >= 0) & (y < C)).to(torch.float64)
            yc = y.clamp(0, C - 1)
            sums[0].index_add_(0, yc, x.to(torch.float64) * keep[:, None])
            sums[1].index_add_(0, yc, keep)
        scores[start:stop] = dch.float().cpu().numpy()
        suggested[start:stop] = best.cpu().numpy()
    if accumulate and sums is None:  # no rows at all
        sums = (torch.zeros(C, cz.shape[1], dtype=torch.float64, device=device),
                torch.zeros(C, dtype=torch.float64, device=device))
    return scores, suggested, sums


def _chunk_starts(n: int, chunk_rows: int, progress: bool, desc: str):
    starts = range(0, n, chunk_rows)
    if progress:
        try:
            from tqdm import tqdm

            return tqdm(starts, total=(n + chunk_rows - 1) // chunk_rows, unit="chunk", desc=desc)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    return starts


def _fit_whitening(features, n, chunk_rows, cz, cy, num_classes, device, progress, **kw) -> _whiten.Whitening:
    """First pass over the rows (their mean and covariance), then the strength (``fastreweight.whiten``)."""
    if cy.numel() == 0:
        raise ValueError("clean_labels is empty: the clean subset needs at least one row per class it scores")
    vc = V.ValueChecks()  # before the first pass: the criterion reads the clean side
    vc.finite("clean_features", cz)
    vc.labels_in_range("clean_labels", cy, num_classes)
    vc.run()
    moments = _whiten.StreamingMoments()
    for start in _chunk_starts(n, chunk_rows, progress, "covariance"):
        moments.update(_as_tensor(features[start:start + chunk_rows]).to(device=device, dtype=torch.float32))
    return _whiten.fit_whitening(moments, cz, cy, num_classes, **kw)


def write_ranked_csv(result: ScoreResult, path: str, *, threshold: float = 0.0) -> int:
    """Write ``rank,index,label,score,suggested_label,suspected`` sorted most-suspicious first.

    Never overwrites: the file is created exclusively and an existing one raises ``FileExistsError``.
    Returns the number of rows flagged (score <= threshold).
    """
    order = result.ranking()
    flagged = 0
    with open(path, "x", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "index", "label", "score", "suggested_label", "suspected"])
        for rank, i in enumerate(order):
            s = float(result.scores[i])
            sus = s <= threshold
            flagged += sus
            w.writerow([rank, int(i), int(result.labels[i]), f"{s:.6g}", int(result.suggested[i]), int(sus)])
    return flagged
