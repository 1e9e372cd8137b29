"""Dataset-scale label-issue scoring: every sample against the clean subset, in streamed chunks.

``score_dataset`` reads the training features a chunk of rows at a time (``.npy`` files are
memory-mapped, ``.pt`` tensors loaded with ``torch.load(weights_only=True, mmap=True)``), scores each
chunk's class similarities (SPEC §3.1–3.3, those of ``class_similarity``, through a ``CleanScorer`` that
validates, centres and plans the clean side once per pass) and the FBR score of SPEC §3.4, and keeps
only the per-sample results.  Samples with the lowest scores are the likeliest label issues.

Memory bound (bytes, beyond the memory-mapped input files, which the OS pages in and out):

    chunk_rows·d·(itemsize + 4)       one chunk as read, and as float32 on the device
  + M·d·4                             the clean subset (float32) on the device
  + chunk_rows·C·4·3                  S and its epilogue temporaries
  + the backend's working set          reference pairwise: ≤ 2^24 floats (64 MiB); prototype: C·d·4
  + N·(8 + 4 + 8)                     labels, scores and suggested labels of the whole dataset
  + N·8                               on an accelerator: the labels' copy in device memory
  + (k + 3)·chunk_rows·d·max(itemsize, 4)   with ``prefetch=k > 0``: chunks read ahead (``prefetch.py``)

so it is independent of N but for the N lines (20 bytes a sample; 28 on an accelerator).  On a GPU the chunks, the clean
side and the per-row results live in device memory; the bound covers host and device together.  ``memory_bound_bytes`` returns it.
With ``whiten`` (see ``fastreweight.whiten``) the features are read twice — once for their mean and
covariance, once to score — and the bound grows by ``4·d²·8`` bytes (covariance, eigenvectors,
transform, workspace) plus ``8·8·max(2^20, M·max(d, C))`` bytes for the leave-one-out criterion;
with ``refine`` the rows are read once more per round and the bound grows by ``2·C·(d + 1)·8`` bytes
(per-class sums and counts).
"""
from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass

import numpy as np
import torch

from .. import whiten as _whiten
from ..clean_scorer import CleanScorer
from ..scores import fbr_from_similarity
from . import validate as LV
from .options import Execution, Similarity, resolve_options
from .prefetch import as_tensor, read_ahead, staged_bytes
from .shard import Shard, agree, digest

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


@dataclass
class ScoreResult:
    scores: np.ndarray  # N, float32: FBR score (low = suspected label issue)
    suggested: np.ndarray  # N, int64: the present class with the highest similarity
    labels: np.ndarray  # N, int64: the given labels
    whitening: dict | None = None  # with ``whiten``: the strength used and the leave-one-out criterion
    refinement: dict | None = None  # with ``refine``: rounds and pseudo-clean rows of the last round
    clean_scores: np.ndarray | None = None  # with ``clean_rows``: the clean rows' scores out of sample (M)

    def ranking(self) -> np.ndarray:
        """Sample indices from most to least suspicious (stable for ties)."""
        return np.argsort(self.scores, kind="stable")


def memory_bound_bytes(n: int, d: int, m: int, c: int, chunk_rows: int, itemsize: int = 4, whiten: bool = False,
                       refine: bool = False, ranks: int = 1, prefetch: int = 0, device="cpu") -> int:
    """The bound of the module doc, in bytes (``ranks``: the ranks of a sharded run; the bound is per rank;
    ``prefetch``: ``Execution.prefetch``, the chunks read ahead; ``device``: where the rows are scored).
    On a GPU it bounds host and device memory together."""
    extra = (4 * d * d * 8 + 8 * 8 * max(1 << 20, m * max(d, c)) if whiten else 0) + (2 * c * (d + 1) * 8 if refine else 0)
    gather = n * 24 + -(-n // ranks) * 12 if ranks > 1 else 0
    ahead = staged_bytes(prefetch, chunk_rows, d, max(itemsize, 4))
    device_labels = n * 8 if torch.device(device).type != "cpu" else 0
    return (chunk_rows * d * (itemsize + 4) + m * d * 4 + chunk_rows * c * 12 + (1 << 24) * 4 + n * 20 + extra + gather
            + ahead + device_labels)


def score_dataset(
    features,
    labels,
    clean_features,
    clean_labels,
    *,
    num_classes: int | None = None,
    similarity: Similarity | None = None,
    execution: Execution | None = None,
    whiten: str | float | None = None,
    refine: int = 0,
    on_missing_class: str = "raise",
    clean_rows=None,
    **options,
) -> ScoreResult:
    """Score all N rows of ``features`` (N×d, array, tensor or memory map) against the clean subset.

    ``similarity`` (``Similarity``: shift, alpha, center, normalize) and ``execution``
    (``Execution``: device, backend, strategy, chunk_rows, progress, process_group) group the
    options; their fields are also accepted as keywords (``shift="second"``, ``chunk_rows=4096``).

    ``on_missing_class``: ``"raise"`` (default) refuses labels of a class with no clean row, naming
    it; ``"skip"`` gives those rows the neutral score 0.  Bad input raises before anything is scored
    (``validate.py``), except non-finite feature rows, found chunk by chunk as they are read: a
    ``ValueError`` naming ``features`` and the first bad row.

    ``whiten``: ``None`` scores the features as given (SPEC §3); a number ``t > 0`` or ``"auto"``
    first maps features and clean features through the spectral-shrinkage whitening of
    ``fastreweight.whiten`` (``"auto"`` picks ``t``, or the plain features, by leave-one-out on the
    clean subset).  With ``center="clean"`` and no cosine normalisation the map is folded into the
    clean class means (``Whitening.folded_means``), so the scored rows are never transformed; otherwise
    every chunk is mapped.  ``ScoreResult.whitening`` records the choice.

    ``refine``: rounds of re-scoring against class means of the clean rows together with the rows
    the previous pass scored > 0 under their given labels (pseudo-clean rows; one more streamed pass
    each).  The clean side stays the clean subset's classes; ``normalize="cosine"`` is not supported
    with it.  ``ScoreResult.refinement`` records the rounds and the pseudo-clean rows used.

    ``clean_rows``: when the clean subset is rows of ``features`` (``clean_features`` equal to
    ``features[clean_rows]``, checked), their scores out of sample in ``ScoreResult.clean_scores``: each
    clean row scored against the class means of the last pass as if it had not been trusted: its share
    as a clean row taken out, and its share as a pseudo-clean row of ``refine`` kept only where its own
    out-of-sample score of the pass before was > 0 (exact for ``refine=1``; later rounds keep the
    share it had).  In sample, a clean row helped make the mean it is
    scored against and scores too high for the noise-rate estimates of ``flag.py``.  Computed in
    float64 for the default similarity (``shift="max"``, ``alpha=0``, ``center="clean"``, no
    ``normalize``; whitening folded or none), else ``None``.

    Sharded over ``torch.distributed`` ranks (``execution=Execution(process_group="world")``; see
    ``shard.py``), e.g. two processes on one machine over one memory-mapped file::

        # score.py
        import torch.distributed as dist
        from fastreweight.label_issues import Execution, load_array, score_dataset
        dist.init_process_group("gloo")            # "nccl" with device=f"cuda:{local_rank}"
        x, y = load_array("feats.npy", "features"), load_array("labels.npy", "labels")
        res = score_dataset(x, y, cx, cy, whiten="auto", execution=Execution(process_group="world"))
        if dist.get_rank() == 0:
            write_ranked_csv(res, "issues.csv")

        torchrun --standalone --nproc_per_node 2 score.py

    Every rank must pass the same arguments, and gets the full result.  Before any collective the ranks
    agree on the checks of the inputs (a rank whose inputs are refused raises its own error, every other
    rank a ``ValueError`` saying another rank rejected its inputs), then compare the shapes, the options
    (similarity, ``whiten``, ``refine``, ``on_missing_class``, ``chunk_rows``, backend and strategy) and
    63-bit BLAKE2b digests of the labels, the clean features, the clean labels and ``clean_rows``: where
    any differ, every rank raises "every rank must call score_dataset with the same inputs and options",
    naming them.  The features themselves are not compared beyond their shape (each rank reads only its
    own shard of what may be a memory-mapped file of many GB): passing different feature files of the
    same shape on different ranks is not detected.  Plain scores and suggestions equal one process's bit for bit;
    with ``whiten`` / ``refine`` the streamed sums are added in another order (per rank, then across
    ranks), which moves scores by float rounding only (see tests/test_label_issues_scale.py)."""
    sim, exe = resolve_options(similarity, execution, options)
    group = exe.group()
    error = None
    try:  # the checks that read no streamed row, agreed on by the ranks before any collective
        LV.check_device(exe.device)
        features = LV.detached(features)  # data, not a graph: the scores would otherwise carry one over every row
        whiten = _whiten.check_whiten(whiten)
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be an int >= 0 (rounds of re-scoring), got {refine!r}")
        if refine and sim.normalize is not None:
            raise ValueError(f"refine needs normalize=None: its prototypes are plain class means, got normalize={sim.normalize!r}")
        inp = LV.check_inputs(features, labels, clean_features, clean_labels, num_classes, on_missing_class, exe.device)
        rows_in_clean = _check_clean_rows(clean_rows, features, inp)
    except Exception as exc:  # noqa: BLE001 - re-raised by agree, on this rank
        error = exc
    try:
        agree(group, error, "its inputs to score_dataset", exe.device)
    finally:
        error = None  # see shard.agree: no cycle through the traceback
    stream = _Stream(features, inp, sim, exe)
    stream.shard.same_everywhere(_fingerprint(inp, sim, exe, whiten, refine, on_missing_class, rows_in_clean))
    cz, cy = inp.clean_features, inp.clean_labels
    C = inp.num_classes
    whitening, folded = None, False  # folded: the whitening is in the class means, rows are scored as they are
    if whiten is not None:
        whitening = _fit_whitening(stream, cz, cy, whiten=whiten, center=sim.center, shift=sim.shift, alpha=sim.alpha)
        if whitening.matrix is not None and sim.center == "clean" and sim.normalize is None:
            folded = True
        else:
            cz = whitening.apply(cz)
    side = (lambda z, y: whitening.folded_means(z, y, C)) if folded else (lambda z, y: (z, y))
    mapped = None if folded else whitening
    if not (sim.shift == "max" and sim.alpha == 0 and sim.center == "clean" and sim.normalize is None
            and (mapped is None or mapped.matrix is None)):
        rows_in_clean = None  # checked; the closed form of _clean_loo_scores covers the default similarity only
    matrix = whitening.matrix if folded else None  # what _clean_loo_scores folds into the class means
    scores, suggested, sums = stream.score_pass(*side(cz, cy), mapped, accumulate=refine > 0, desc="scoring")
    scores, suggested, refinement, pseudo = _refine(stream, scores, suggested, sums, cz, cy, inp, refine, side, mapped,
                                                    rows_in_clean, matrix)
    scores, suggested = stream.shard.gather(scores), stream.shard.gather(suggested)
    loo = None
    if rows_in_clean is not None:
        loo = _clean_loo_scores(cz, cy, C, matrix, pseudo).cpu().numpy()
    return ScoreResult(scores=scores.numpy(), suggested=suggested.numpy(), labels=inp.labels.numpy(),
                       whitening=None if whitening is None else whitening.describe(), refinement=refinement,
                       clean_scores=loo)


def _fingerprint(inp: LV.Inputs, sim: Similarity, exe: Execution, whiten, refine: int, on_missing_class: str,
                 rows_in_clean) -> dict[str, int]:
    """What ``Shard.same_everywhere`` compares across the ranks of a sharded ``score_dataset``: the shapes,
    and 63-bit digests of the labels, the clean side and the options that change the scores.  The
    features themselves are compared by their shape only (hashing them would read every row of what may
    be a file of many GB on every rank, where each rank reads only its own shard)."""
    return {
        "the number of rows": inp.n, "the number of features": inp.d, "the number of clean rows": inp.clean_features.shape[0],
        "num_classes": inp.num_classes, "chunk_rows": exe.chunk_rows,
        "the labels": digest(inp.labels), "the clean labels": digest(inp.clean_labels),
        "the clean features": digest(inp.clean_features), "clean_rows": digest(rows_in_clean),
        "the similarity options": digest(sim), "whiten": digest(whiten), "refine": refine,
        "on_missing_class": digest(on_missing_class), "backend and strategy": digest(exe.backend, exe.strategy),
    }


def _refine(stream, scores, suggested, sums, cz, cy, inp, refine: int, side, mapped, rows_in_clean, matrix):
    """``score_dataset``'s ``refine`` rounds after the first pass (``scores``, ``suggested`` and its class
    ``sums``): ``(scores, suggested, refinement, pseudo)``, ``pseudo`` what ``_clean_loo_scores`` needs to
    take the clean rows' shares out of the last round's class means (``None`` without ``rows_in_clean``)."""
    C = inp.num_classes
    refinement, pseudo = None, None
    for round_ in range(refine):
        # SPEC §3's prototypes from more rows: the clean rows together with the rows the last pass
        # scored > 0 under their given labels; one row per present class stands for its mean
        csum = torch.zeros_like(sums[0]).index_add_(0, cy, cz.to(torch.float64))
        ccount = torch.bincount(cy, minlength=C).to(torch.float64)
        present_cls = torch.nonzero(ccount > 0).flatten()
        total = (csum + sums[0])[present_cls] / (ccount + sums[1])[present_cls, None]
        refinement = {"rounds": round_ + 1, "pseudo_clean_rows": int(sums[1].sum())}
        last = round_ == refine - 1
        if last and rows_in_clean is not None:  # which clean rows the last pass's means counted twice
            same_class = (inp.labels[rows_in_clean] == cy.cpu()).to(torch.float64).to(cz.device)  # summed under the clean label
            in_sample = _pseudo_clean(stream, scores, rows_in_clean) * same_class
            # out of sample, would the row have scored > 0 in the pass before?  Known exactly when that
            # pass scored against the clean rows alone (refine=1); later rounds keep the row's share
            out_of_sample = in_sample if refine > 1 else (_clean_loo_scores(cz, cy, C, matrix, None) > 0) * same_class
            pseudo = (csum, ccount, sums, in_sample, out_of_sample)
        scores, suggested, sums = stream.score_pass(*side(total.to(torch.float32), present_cls), mapped,
                                                    accumulate=not last, desc=f"refining {round_ + 1}/{refine}")
    return scores, suggested, refinement, pseudo


def _check_clean_rows(clean_rows, features, inp):
    """``clean_rows`` as int64 indices into ``features`` after checking that those rows are the clean
    features (``None`` when not given)."""
    if clean_rows is None:
        return None
    rows = LV.check_clean_idx(clean_rows, inp.n, "clean_rows")
    if rows.size != inp.clean_features.shape[0]:
        raise ValueError(f"clean_rows must name one row of features per clean row: {inp.clean_features.shape[0]} "
                         f"clean rows, got {rows.size} indices")
    picked = as_tensor(LV.rows_of(features, rows)).to(device=inp.clean_features.device, dtype=torch.float32)
    if not torch.equal(picked, inp.clean_features):
        raise ValueError("clean_rows must index the rows of features that clean_features holds (features[clean_rows] "
                         "differs from clean_features)")
    return torch.as_tensor(rows)


def _pseudo_clean(stream, scores, rows: torch.Tensor) -> torch.Tensor:
    """1.0 for the clean rows (``rows``: their indices into the dataset) that the pass with ``scores``
    (this process's block) scored > 0, i.e. that ``refine`` added to their class sums again (summed
    over the ranks)."""
    sh = stream.shard
    mine = (rows >= sh.lo) & (rows < sh.hi)
    out = torch.zeros(rows.numel(), dtype=torch.float64, device=scores.device)
    local = rows[mine].to(scores.device) - sh.lo
    out[mine.to(scores.device)] = (scores[local] > 0).to(torch.float64)
    sh.all_sum_(out)
    return out


def _clean_loo_scores(cz, cy, C: int, matrix, pseudo) -> torch.Tensor:
    """Each clean row's FBR score (shift ``"max"``) against the last pass's class means with its own
    share taken out (``score_dataset``'s ``clean_rows``).  With the class means ``m_c`` (over ``n_c``
    rows), their mean ``cen`` over the ``P`` present classes and ``A = W Wᵀ`` (the folded whitening;
    the identity without), ``S_ic = (z_i − cen)ᵀ A (m_c − cen)``.  Taking row ``i`` (counted ``k_i``
    times in its class ``y``) out moves ``m_y`` by ``δ = k_i (m_y − z_i) / (n_y − k_i)`` and ``cen`` by
    ``δ / P`` (``k_i`` may be 0, or −1 where the row joins a sum it was not in); expanding the product
    gives the new ``S_i·`` from ``S``, ``a = (z_i − cen)ᵀAδ``,
    ``b_c = δᵀA(m_c − cen)`` and ``q = δᵀAδ`` without forming the M sets of means.  A row whose class
    would be left without rows gets nan."""
    z = cz.to(torch.float64)
    y = cy.to(torch.int64)
    csum = torch.zeros(C, z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, y, z)
    count = torch.bincount(y, minlength=C).to(torch.float64)
    k = torch.ones(z.shape[0], dtype=torch.float64, device=z.device)
    if pseudo is not None:  # refine: the clean rows and the pass's pseudo-clean rows.  Out of sample a clean
        # row keeps a pseudo-clean share only where its own out-of-sample score of the pass before was > 0,
        # as a correctly labelled row of the dataset has one only where it scored > 0
        csum, count = pseudo[0] + pseudo[2][0], pseudo[1] + pseudo[2][1]
        k = k + pseudo[3].to(z.device) - pseudo[4].to(z.device)
    present = torch.nonzero(count > 0).flatten()
    P = present.numel()
    m = csum[present] / count[present, None]
    cen = m.mean(dim=0)
    A = None if matrix is None else (matrix.to(torch.float64) @ matrix.to(torch.float64).T)
    G = (m - cen) if A is None else (m - cen) @ A  # A is symmetric
    pos = torch.searchsorted(present, y)  # each row's class among the present ones
    n_y = count[y]
    left = n_y - k
    delta = k[:, None] * (m[pos] - z) / left.clamp_min(1.0)[:, None]
    u = z - cen
    a_delta = delta if A is None else delta @ A
    S = u @ G.T
    a = (u * a_delta).sum(1)
    b = delta @ G.T
    q = (delta * a_delta).sum(1)
    S = S - (a / P)[:, None] - b / P + (q / P ** 2)[:, None]
    rows = torch.arange(z.shape[0], device=z.device)
    S[rows, pos] += a - q / P
    own = S[rows, pos]
    if P > 1:
        S[rows, pos] = float("-inf")
        best = S.amax(dim=1)
    else:
        best = torch.zeros_like(own)
    score = own - best
    return torch.where(left > 0, score, torch.full_like(score, float("nan")))


class _Stream:
    """The rows of this process (``Shard``), read a chunk at a time as float32 on the device; the
    first pass over them checks every chunk is finite (the rows cannot change between passes)."""

    def __init__(self, features, inp: LV.Inputs, sim: Similarity, exe: Execution):
        self.features, self.C, self.exe = features, inp.num_classes, exe
        self.y_all = inp.labels.to(exe.device)  # once, not a small blocking copy per chunk
        self.shard = Shard(inp.n, exe.chunk_rows, exe.group(), exe.device)
        # rows already on an accelerator are sliced in place: nothing to read ahead
        on_device = isinstance(features, torch.Tensor) and features.device.type != "cpu"
        self.prefetch = 0 if on_device else exe.prefetch
        self.sim_kw = dict(num_classes=inp.num_classes, center=sim.center, normalize=sim.normalize,
                           strategy=exe.strategy, backend=exe.backend, check_values=False)
        self.shift, self.alpha = sim.shift, sim.alpha
        self.checked = False

    def host_rows(self, start: int, stop: int):
        return self.features[start:stop]

    def read(self, start: int, stop: int) -> torch.Tensor:
        return as_tensor(self.host_rows(start, stop)).to(device=self.exe.device, dtype=torch.float32).contiguous()

    def _locate(self, start: int) -> int:
        return LV.first_nonfinite_row(self.read(start, min(self.shard.hi, start + self.exe.chunk_rows)))

    def chunks(self, desc: str):
        """``(start, stop, x)`` over this process's rows; on the first pass, a non-finite row raises
        (on every rank of a sharded run) once the pass ends."""
        check = None if self.checked else LV.FiniteRows(self._locate, every=1 if self.exe.device.type == "cpu" else 16)
        sh, cr = self.shard, self.exe.chunk_rows
        starts = range(sh.lo, sh.hi, cr)
        if self.exe.progress and sh.rank == 0:
            starts = _progress(starts, desc)
        ranges = ((start, min(sh.hi, start + cr)) for start in starts)
        with contextlib.closing(read_ahead(self.host_rows, ranges, self.exe.device, self.prefetch)) as rows:
            for start, stop, x in rows:
                if check is not None and not check.add(start, x):
                    break
                yield start, stop, x
        if check is not None:
            check.finish()
            bad = sh.min_int(sh.n if check.bad_row is None else check.bad_row)
            if bad < sh.n:  # the row as given tells a NaN / Inf from a float32 overflow
                raise ValueError(LV.nonfinite_message("features", bad, self.features[bad]))
            self.checked = True

    def score_pass(self, cz, cy, whitening, *, accumulate: bool, desc: str):
        """One streamed pass over this process's rows: FBR score and suggested class of every row
        against the clean side ``(cz, cy)``; with ``accumulate``, also the per-class sum and count of
        the (transformed) rows that score > 0 under their given label, summed over the ranks."""
        C, dev, lo = self.C, self.exe.device, self.shard.lo
        n_local = self.shard.hi - lo
        scores = torch.empty(n_local, dtype=torch.float32, device=dev)
        suggested = torch.empty(n_local, dtype=torch.int64, device=dev)
        present = torch.bincount(cy.clamp(0, C - 1), minlength=C) > 0
        sums = (torch.zeros(C, cz.shape[1], dtype=torch.float64, device=dev),
                torch.zeros(C, dtype=torch.float64, device=dev)) if accumulate else None
        neg_inf = torch.full((), float("-inf"), device=dev)
        # the clean side validated, centred and planned once per pass, not once per chunk
        clean = CleanScorer(cz, cy, **self.sim_kw)
        for start, stop, x in self.chunks(desc):
            if whitening is not None:
                x = whitening.apply(x)
            y = self.y_all[start:stop]
            S = clean.class_similarity(x)
            scores[start - lo:stop - lo], suggested[start - lo:stop - lo] = _epilogue(
                S, y, present, neg_inf.to(S.dtype), self.shift, self.alpha)
            if accumulate:
                # rows scored > 0 (labels are in range, checked): a masked add, so no boolean
                # indexing and no host synchronisation per chunk
                keep = (scores[start - lo:stop - lo] > 0).to(torch.float64)
                x64 = x.to(torch.float64, copy=True).mul_(keep[:, None])
                sums[0].index_add_(0, y, x64)
                sums[1].index_add_(0, y, keep)
        if accumulate:
            self.shard.all_sum_(*sums)
        return scores, suggested, sums


def _epilogue(S, y, present, neg_inf, shift: str, alpha: float):
    """(FBR score, suggested class) of each row of ``S``.  For the default ``shift="max"`` with
    ``alpha=0`` the ops of ``reference.fbr_from_similarity`` that matter are run here on the masked
    ``S`` the suggestion needs anyway (three passes over ``S`` instead of seven; the same values, bit
    for bit: tests/test_label_issues.py); labels are in range (checked up front)."""
    ranked = torch.where(present[None, :], S, neg_inf)
    best = ranked.argmax(dim=1)
    if shift != "max" or alpha != 0:
        return fbr_from_similarity(S, y, present, shift=shift, alpha=alpha), best
    yc = y[:, None]
    own = S.gather(1, yc).squeeze(1)
    b = ranked.scatter_(1, yc, float("-inf")).amax(dim=1)  # the best present competitor
    b = b.nan_to_num(nan=float("nan"), posinf=float("inf"), neginf=0.0)  # no competitor: no shift
    d = own - b
    return torch.where(present[y], d, torch.zeros_like(d)), best


def _progress(starts, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return starts
    return tqdm(starts, unit="chunk", desc=desc)


def _fit_whitening(stream: _Stream, cz, cy, **kw) -> _whiten.Whitening:
    """First pass over the rows (their mean and covariance, summed over the ranks), then the strength
    (``fastreweight.whiten``)."""
    moments = _whiten.StreamingMoments()
    sh = stream.shard
    if not (sh.lo == 0 and sh.hi > 0):
        # the shift of one process's moments, global chunk 0's mean, on every rank (StreamingMoments
        # takes it from the first chunk it sees; the chunk itself is then taken out again)
        moments.update(stream.read(0, min(sh.n, stream.exe.chunk_rows)))
        moments.n = 0
        moments.sum.zero_()
        moments.gram.zero_()
    for _, _, x in stream.chunks("covariance"):
        moments.update(x)
    if sh.sharded:
        n = torch.tensor([moments.n], dtype=torch.float64, device=moments.sum.device)
        sh.all_sum_(moments.sum, moments.gram, n)
        moments.n = int(n)
    return _whiten.fit_whitening(moments, cz, cy, stream.C, **kw)


def write_ranked_csv(result: ScoreResult, path: str, *, threshold: float = 0.0) -> int:
    """Write ``rank,index,label,score,suggested_label,suspected`` sorted most-suspicious first
    (``score_dataset``'s columns; ``LabelIssues.write_csv`` and ``fastreweight score`` write cleanlab's
    ``rank,index,given_label,predicted_label,score,label_score,is_label_issue`` instead).

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
