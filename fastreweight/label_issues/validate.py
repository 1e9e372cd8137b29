"""Checks of ``score_dataset``'s inputs, all run before the first row is scored (and so before any
output exists), except the finiteness of the streamed features, which is checked a chunk at a time as
the rows are read (``FiniteRows``).  Every error names the argument and, for bad values, the first
offending row or class.

* features / clean_features: a 2-D real array or tensor (float or integer dtype) with at least one
  row and one column; every value finite (the first non-finite row is named);
* labels / clean_labels: 1-D, an integer dtype (``LabelDtypeError``, a ``TypeError`` that is also a
  ``ValueError``, for float or bool labels), one per row, values in ``[0, num_classes)``;
* the clean subset: at least two classes; a class that some row is labelled with but that has no
  clean row is an error by default (``on_missing_class="raise"``, as cleanlab users expect), or with
  ``on_missing_class="skip"`` those rows get the neutral score 0 (flagged at the default threshold);
* ``clean_subset``: a ``clean_idx`` of row indices, 1-D, integer, non-empty, in range, no repeats;
* an audit (``find_label_issues``' ``clean_idx`` with ``clean_labels``): one verified label per
  ``clean_idx`` row, checked as labels are; the classes present are the verified labels'.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .. import validate as V

__all__ = ["LabelDtypeError", "Inputs", "check_inputs", "check_find_inputs", "check_clean_idx", "clean_subset", "FiniteRows",
           "first_nonfinite_row", "detached", "float32_array", "rows_of", "check_finite_rows",
           "check_positive_int", "check_real", "parse_device", "check_device"]


class LabelDtypeError(TypeError, ValueError):
    """Labels of a non-integer dtype (a ``TypeError``; also a ``ValueError``, so that command-line
    front ends that report bad input as ``ValueError`` catch it)."""


def _check_array(name: str, a, ndim: int) -> None:
    if not isinstance(a, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    if a.ndim != ndim:
        shape = "[N, d]" if ndim == 2 else "[N]"
        raise ValueError(f"{name} must be {ndim}-D of shape {shape}, got shape {tuple(a.shape)}")


def detached(a):
    """Features are data, not a graph: a tensor's values without autograd (a view, no copy); anything
    else as given.  Without it a tensor that requires grad fails deep inside (``.numpy()``), and the
    streamed scores would carry a graph over every row."""
    return a.detach() if isinstance(a, torch.Tensor) else a


def float32_array(a) -> np.ndarray:
    """``a`` (array, memory map or tensor) as a float32 numpy array of its own where a copy is needed.
    A tensor is read detached and on the CPU; bfloat16, which numpy lacks, widens exactly to float32.
    A memory map (often read-only) is always copied: torch refuses to wrap read-only memory quietly."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(device="cpu", dtype=torch.float32).numpy()
    with np.errstate(over="ignore"):  # a value beyond float32 becomes Inf, which the callers report by row
        return np.array(a, dtype=np.float32, copy=True if isinstance(a, np.memmap) else None)


def _host_tensor(a) -> torch.Tensor:
    """A CPU tensor of ``a``'s values in its own dtype: a numpy copy in native byte order (torch has no
    big-endian dtypes, and a memory map of a big-endian file is common), or the detached tensor."""
    if isinstance(a, torch.Tensor):
        return a.detach()
    a = np.asarray(a)
    return torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("=")))


def rows_of(features, idx: np.ndarray):
    """``features[idx]`` (``idx`` int64 row indices, checked), a tensor's rows as a detached tensor (any
    float dtype, bfloat16 included: the scorers widen it), an array's as a numpy array."""
    if isinstance(features, torch.Tensor):
        return features.detach()[torch.as_tensor(np.asarray(idx, dtype=np.int64), device=features.device)]
    return np.asarray(features[idx])


def _is_integer(a) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype in V.INT_DTYPES
    return np.issubdtype(a.dtype, np.integer)


def _is_real(a) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype in V.FLOAT_DTYPES or a.dtype in V.INT_DTYPES
    return np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)


def check_features(name: str, a) -> tuple[int, int]:
    """(rows, columns) of a 2-D real feature array with at least one of each."""
    _check_array(name, a, 2)
    if not _is_real(a):
        raise TypeError(f"{name} must hold real numbers (a float or integer dtype), got {a.dtype}")
    n, d = a.shape
    if n == 0:
        raise ValueError(f"{name} is empty (0 rows): there is nothing to score")
    if d == 0:
        raise ValueError(f"{name} has 0 columns: every row needs at least one feature")
    return n, d


def labels_tensor(name: str, a, n: int, rows_of: str) -> torch.Tensor:
    """An int64 CPU copy of ``n`` integer labels."""
    _check_array(name, a, 1)
    if not _is_integer(a):
        is_bool = a.dtype in (torch.bool, np.bool_)
        raise LabelDtypeError(f"{name} must be integers (class indices), got {a.dtype}"
                              + ("" if is_bool else " (cast them, e.g. .astype(np.int64), if they hold whole numbers)"))
    if a.shape[0] != n:
        raise ValueError(f"{name} must have one entry per row of {rows_of} ({n}), got {a.shape[0]}")
    if isinstance(a, torch.Tensor):
        return a.detach().to(device="cpu", dtype=torch.int64, copy=True)
    return torch.from_numpy(np.array(a, dtype=np.int64))  # a copy: never the caller's (or a memory map's) memory


def check_label_values(name: str, y: torch.Tensor, num_classes: int) -> None:
    if y.numel() == 0:
        return
    lo, hi = torch.aminmax(y)
    if int(lo) < 0 or int(hi) >= num_classes:
        first = int(torch.nonzero((y < 0) | (y >= num_classes))[0])
        raise ValueError(f"{name} must hold class labels in [0, {num_classes}), got values in [{int(lo)}, {int(hi)}] "
                         f"(the first out of range: {int(y[first])} at row {first})")


def first_nonfinite_row(x: torch.Tensor) -> int | None:
    bad = ~torch.isfinite(x).all(dim=1)
    idx = torch.nonzero(bad)
    return int(idx[0]) if idx.numel() else None


def _finite_before_cast(original_row) -> bool:
    """True when the row as given (before the float32 cast) is finite: then the cast overflowed."""
    if original_row is None:
        return False
    if isinstance(original_row, torch.Tensor):
        return bool(torch.isfinite(original_row.detach().to(torch.float64)).all())
    return bool(np.isfinite(np.asarray(original_row, dtype=np.float64)).all())


def nonfinite_message(name: str, row: int, original_row=None, where: str = "the first such row") -> str:
    """The error for a non-finite float32 row.  ``original_row``: that row as the caller gave it; when
    it is finite the values only overflowed float32 (beyond ±3.4e38), and saying "NaN or Inf" would
    send the user looking for values that are not there."""
    if _finite_before_cast(original_row):
        return (f"{name} at row {row} ({where}) holds values beyond float32's range (±3.4e38), which overflow "
                "when the features are read as float32; scale the features down")
    return f"{name} contains NaN or Inf at row {row} ({where}); every feature must be finite"


def check_finite_rows(name: str, t: torch.Tensor, original, row_names=None, where: str = "the first such row") -> None:
    """Raise ``ValueError`` at the first non-finite row of the float32 ``t`` (made from ``original``).
    ``row_names``: the row numbers to report (e.g. ``clean_idx``: the rows of ``features`` that ``t``
    holds), else ``t``'s own."""
    row = first_nonfinite_row(t)
    if row is not None:
        shown = row if row_names is None else int(row_names[row])
        raise ValueError(nonfinite_message(name, shown, original[row], where))


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` >= 1 (numpy integers accepted; bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_real(name: str, value, what: str) -> float:
    """``value`` as a ``float``: a real number (numpy scalars accepted; bools refused), not NaN (every
    comparison with NaN is false, so it would silently flag nothing).  ``what`` says what it is."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number ({what}), got {value!r} ({type(value).__name__})")
    if np.isnan(value):
        raise ValueError(f"{name} must be a real number ({what}), got nan")
    return float(value)


def parse_device(device) -> torch.device:
    """``device`` as a ``torch.device`` (it need not exist here: an option object may be built ahead of
    the run), a ``ValueError`` naming the argument for anything torch cannot parse."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}") from None


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` that exists here, checked before anything is scored
    (``fastreweight.validate.device_problem``)."""
    dev = parse_device(device)
    why = V.device_problem(dev)
    if why is not None:
        raise ValueError(f"device={str(dev)!r} but {why}; use device='cpu'")
    return dev


@dataclass
class Inputs:
    n: int
    d: int
    labels: torch.Tensor  # N, int64, CPU
    clean_features: torch.Tensor  # M×d, float32, on the device
    clean_labels: torch.Tensor  # M, int64, on the device
    num_classes: int


def check_inputs(features, labels, clean_features, clean_labels, num_classes, on_missing_class, device) -> Inputs:
    """Every check that reads no streamed feature row (see the module doc)."""
    n, d = check_features("features", features)
    m, dc = check_features("clean_features", clean_features)
    if dc != d:
        raise ValueError(f"clean_features must have {d} columns like features, got shape {tuple(clean_features.shape)}")
    V.check_option("on_missing_class", on_missing_class, V.MISSING_OPTIONS)
    num_classes = V.check_num_classes(num_classes)
    y = labels_tensor("labels", labels, n, "features")
    cy = labels_tensor("clean_labels", clean_labels, m, "clean_features")
    if num_classes is None:
        num_classes = max(int(y.max()), int(cy.max())) + 1
        if num_classes < 1:
            num_classes = 1  # every label negative: the range check below names the first
    check_label_values("labels", y, num_classes)
    check_label_values("clean_labels", cy, num_classes)
    cz = _host_tensor(clean_features).to(device=device, dtype=torch.float32)
    check_finite_rows("clean_features", cz, clean_features)
    _check_classes(y, cy, num_classes, on_missing_class, remedy=_SKIP_REMEDY)
    return Inputs(n=n, d=d, labels=y, clean_features=cz, clean_labels=cy.to(device), num_classes=num_classes)


#: what ``score_dataset`` offers for a class with no clean row (``find_label_issues`` has no such option);
#: adding rows comes first, as the one way out that every caller of ``score_dataset`` has
_SKIP_REMEDY = (": add clean rows of those classes to clean_features and clean_labels, or pass "
                "on_missing_class='skip' (those rows then get the neutral score 0, flagged at the default threshold)")


def _check_classes(y: torch.Tensor, cy: torch.Tensor, num_classes: int, on_missing_class: str,
                   clean_name: str = "clean_labels", remedy: str = "") -> None:
    """At least two classes in the clean subset, and (unless ``on_missing_class="skip"``) a clean row of
    every class a row is labelled with.  ``remedy``: the way out the entry point offers, named in the
    error (each entry takes different arguments)."""
    clean_counts = torch.bincount(cy, minlength=num_classes)
    present = torch.nonzero(clean_counts > 0).flatten().tolist()
    if len(present) < 2:
        raise ValueError(f"{clean_name} hold only class(es) {present}: label-issue scores compare a row's own class "
                         "with the others, so the clean subset needs at least two classes")
    if on_missing_class == "skip":
        return
    counts = torch.bincount(y, minlength=num_classes)
    missing = torch.nonzero((counts > 0) & (clean_counts == 0)).flatten()
    if missing.numel():
        cls = missing.tolist()
        rows = int(counts[missing].sum())
        raise ValueError(
            f"labels contain class(es) {cls[:10]}{' …' if len(cls) > 10 else ''} ({rows} rows) that are absent from "
            f"the clean subset ({clean_name}): every class a row is labelled with needs at least one clean row"
            + remedy)


def check_clean_idx(clean_idx, n: int, name: str = "clean_idx") -> np.ndarray:
    """``clean_idx`` as int64 row indices after checking it: a non-empty 1-D integer array of indices in
    ``[0, n)``, none repeated (negative indices are refused, not wrapped)."""
    idx = clean_idx.detach().cpu().numpy() if isinstance(clean_idx, torch.Tensor) else np.asarray(clean_idx)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        mask = " (a boolean mask? pass np.flatnonzero(mask))" if idx.dtype == np.bool_ else ""
        raise ValueError(f"{name} must be a 1-D array of integer row indices, got {idx.dtype} of shape {idx.shape}{mask}")
    if idx.size == 0:
        raise ValueError(f"{name} is empty: the clean subset needs at least one row")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= n:
        first = int(np.flatnonzero((idx < 0) | (idx >= n))[0])
        raise ValueError(f"{name} must hold row indices in [0, {n}), got {int(idx[first])} at position {first}")
    srt = np.sort(idx, kind="stable")
    dup = np.flatnonzero(srt[1:] == srt[:-1])
    if dup.size:
        raise ValueError(f"{name} must not repeat a row: {int(srt[dup[0]])} appears more than once")
    return idx.astype(np.int64)


def check_find_inputs(features, labels, clean_idx, clean_features, clean_labels, num_classes):
    """``find_label_issues``' checks, before any scoring: the module doc's, with the clean subset given
    either as ``clean_idx`` or as ``clean_features`` / ``clean_labels`` (small: their finiteness is
    checked here; the finiteness of ``features`` is left to the scorer, which reads every row anyway).
    ``clean_idx`` with ``clean_labels`` is an audit: ``clean_labels[j]`` is the verified label of row
    ``clean_idx[j]``, whose given label stays ``labels[clean_idx[j]]``.
    Returns ``(labels as int64 numpy, num_classes, clean_idx as int64 numpy or None, verified labels as
    int64 numpy or None)``; ``num_classes`` defaults to one more than the largest label of either side."""
    n, d = check_features("features", features)
    y = labels_tensor("labels", labels, n, "features")
    num_classes = V.check_num_classes(num_classes)
    verified = None
    if clean_idx is not None:
        clean_idx = check_clean_idx(clean_idx, n)
        cy, clean_name = y[torch.from_numpy(clean_idx)], "clean_idx"
        if clean_labels is not None:  # an audit: the verified labels of the clean_idx rows
            cy = verified = labels_tensor("clean_labels", clean_labels, clean_idx.size, "clean_idx")
            clean_name = "clean_labels"
    else:
        m, dc = check_features("clean_features", clean_features)
        if dc != d:
            raise ValueError(f"clean_features must have {d} columns like features, got shape {tuple(clean_features.shape)}")
        cy, clean_name = labels_tensor("clean_labels", clean_labels, m, "clean_features"), "clean_labels"
        check_finite_rows("clean_features", _host_tensor(clean_features).to(torch.float32), clean_features)
    if num_classes is None:
        num_classes = max(1, max(int(y.max()), int(cy.max())) + 1)
    check_label_values("labels", y, num_classes)
    if clean_idx is None or verified is not None:  # clean_idx alone: its labels are rows of labels, checked above
        check_label_values("clean_labels", cy, num_classes)
    _check_classes(y, cy, num_classes, "raise", clean_name, remedy=_add_rows_remedy(clean_name, verified))
    return y.numpy(), num_classes, clean_idx, None if verified is None else verified.numpy()


def _add_rows_remedy(clean_name: str, verified) -> str:
    """``find_label_issues``' way out of a class with no clean row: it has no ``on_missing_class`` (a row
    of such a class could only get the neutral score), so trusted rows of the class must be added."""
    if clean_name == "clean_idx":
        where = "clean_idx"
    else:
        where = "clean_idx and clean_labels" if verified is not None else "clean_features and clean_labels"
    return f": add trusted rows of those classes to {where}"


def clean_subset(features, labels, clean_idx, name: str = "clean_idx"):
    """``(features[clean_idx], labels[clean_idx])`` after checking ``clean_idx`` (``check_clean_idx``)."""
    idx = check_clean_idx(clean_idx, features.shape[0], name)
    if isinstance(features, torch.Tensor):
        cx = features[torch.from_numpy(idx)]
    else:
        cx = np.asarray(features[idx])
    cy = labels[torch.from_numpy(idx)] if isinstance(labels, torch.Tensor) else np.asarray(labels)[idx]
    return cx, cy


class FiniteRows:
    """The finiteness check of the streamed rows, one chunk at a time.

    ``add(start, x)`` reduces the chunk to one device boolean (``aminmax``: one pass, no temporary).
    The booleans are read back every ``every`` chunks (1 on the CPU, where reading costs nothing;
    more on an accelerator, where each read is a host synchronisation) and by ``finish()``.  A failed
    chunk is read again through ``locate(start)`` to name its first bad row.  ``bad_row`` is the
    global index of the first non-finite row found, or ``None``."""

    def __init__(self, locate, every: int = 1):
        self.locate = locate
        self.every = every
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.bad_row: int | None = None

    def add(self, start: int, x: torch.Tensor) -> bool:
        """False once a bad row has been found (stop reading)."""
        lo, hi = torch.aminmax(x)
        self.pending.append((start, torch.isfinite(lo) & torch.isfinite(hi)))
        if len(self.pending) >= self.every:
            self.finish()
        return self.bad_row is None

    def finish(self) -> None:
        if not self.pending:
            return
        oks = torch.stack([ok for _, ok in self.pending]).tolist()
        for (start, _), ok in zip(self.pending, oks):
            if not ok:
                self.bad_row = start + self.locate(start)
                break
        self.pending.clear()
