"""The validated, normalised form of one scoring call, handed to every backend.

``build_problem`` runs all checks of ``validate.py`` and computes the small O(M·d) quantities every
backend needs: the class counts ``M_c``, the class weights ``1/M_c`` (0 for absent classes) and, for
``center="clean"``, the class-balanced clean mean ``mu`` of every layer's first factor (SPEC §3.1).
Nothing of size B×M or B×d is created here.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from . import validate as V


@dataclass
class Layer:
    """One term of the kernel sum: ``<X~_i, Z~_j> · <E_i, F_j>`` (the second factor optional)."""

    x: torch.Tensor  # B×d
    z: torch.Tensor  # M×d
    mu: torch.Tensor | None  # d, in the accumulation dtype; None = no centering
    e: torch.Tensor | None = None  # B×k
    f: torch.Tensor | None = None  # M×k


@dataclass
class Problem:
    layers: list[Layer]
    clean_y: torch.Tensor  # M, int64
    num_classes: int
    class_counts: torch.Tensor  # C, int64
    class_weight: torch.Tensor  # C, acc dtype: 1/M_c, 0 where M_c = 0
    cosine: bool
    acc_dtype: torch.dtype  # float64 for float64 inputs, float32 otherwise
    device: torch.device
    y: torch.Tensor | None = None  # B, int64 (None for meta scores)
    # clean-side quantities cached across calls with the same clean tensors (see CleanCache);
    # backends may memoise further clean-side work here (e.g. class prototypes)
    clean_memo: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.layers[0].x.shape[0]

    @property
    def num_clean(self) -> int:
        return self.layers[0].z.shape[0]

    @property
    def gradient_kernel(self) -> bool:
        return self.layers[0].e is not None

    @property
    def present(self) -> torch.Tensor:
        return self.class_counts > 0

    @property
    def input_dtype(self) -> torch.dtype:
        return self.layers[0].x.dtype


class CleanCache:
    """Clean-side quantities (class counts, class weights, centering means) memoised across calls.

    Training loops call the scoring functions many times with the *same* clean tensors (a feature
    cache refreshed every R steps, SPEC §5); recomputing ``M_c``, ``1/M_c`` and ``mu`` each time is a
    handful of small kernels per call, which dominates the cost for small models.  An entry is
    reused only if every clean tensor is the very same object (held by weak reference) with the same
    in-place version counter, shape, dtype and device, and the options match; otherwise it is rebuilt.
    Writes that bypass the version counter (through ``.data``, or through a NumPy array sharing the
    tensor's memory) are not seen: pass a new tensor after such a write, or call ``clear()``
    (``fastreweight.clear_clean_cache()``).  Inference tensors and calls traced by ``torch.compile``
    are not memoised (``usable``).
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()

    @staticmethod
    def usable(tensors) -> bool:
        """Whether these clean tensors can be memoised: not while ``torch.compile`` traces (the version
        counter is not traceable) nor for inference tensors (they have none)."""
        if torch.compiler.is_compiling():
            return False
        return not any(t is not None and t.is_inference() for t in tensors)

    @staticmethod
    def _fingerprint(tensors):
        return tuple((t._version, tuple(t.shape), t.dtype, t.device) if t is not None else None for t in tensors)

    def get(self, tensors, options):
        key = (tuple(id(t) for t in tensors), options)
        entry = self._entries.get(key)
        if entry is None:
            return None
        refs, fp, value = entry
        if any((r() is not t) if r is not None else (t is not None) for r, t in zip(refs, tensors)) or fp != self._fingerprint(tensors):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, tensors, options, value) -> None:
        key = (tuple(id(t) for t in tensors), options)
        refs = tuple(weakref.ref(t) if t is not None else None for t in tensors)
        self._entries[key] = (refs, self._fingerprint(tensors), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


clean_cache = CleanCache()


def acc_dtype_for(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def class_balanced_mean(z: torch.Tensor, clean_y: torch.Tensor, class_counts: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """mu = (1/C') Σ_{c present} mean_{j: u_j = c} Z_j  =  Σ_j Z_j / (C' · M_{u_j})."""
    return class_balanced_row_weights(clean_y, class_counts, acc) @ z.to(acc)


def class_balanced_row_weights(clean_y: torch.Tensor, class_counts: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """The M weights ``1/(C' · M_{u_j})`` (0 for a label out of range) of ``class_balanced_mean``."""
    C = class_counts.shape[0]
    in_range = (clean_y >= 0) & (clean_y < C)  # out-of-range rows (check_values=False) take no part
    present = (class_counts > 0).sum().to(acc)
    row_count = class_counts[clean_y.clamp(0, C - 1)].to(acc).clamp_min(1)
    return torch.where(in_range, 1.0 / (row_count * present), torch.zeros((), dtype=acc, device=clean_y.device))


def build_problem(
    x,
    clean_x,
    *,
    y=None,
    clean_y=None,
    x2=None,
    clean_x2=None,
    num_classes=None,
    center="clean",
    normalize=None,
    check_values=True,
    require_two_classes=False,
    on_missing_class="raise",
    center_labels=None,
) -> Problem:
    """Validate one call's inputs and compute the small shared quantities (see module doc).

    ``clean_y=None`` (meta scores) aggregates all clean rows into one pseudo-class of weight 1/M;
    ``center_labels`` then optionally gives clean labels for a class-balanced centering mean.
    """
    V.check_option("center", center, V.CENTER_OPTIONS)
    V.check_option("normalize", normalize, V.NORMALIZE_OPTIONS)
    V.check_option("on_missing_class", on_missing_class, V.MISSING_OPTIONS)
    xs, zs, es, fs = _factor_lists(x, clean_x, x2, clean_x2)
    B, M, dtype, named = _checked_factors(xs, zs, es, fs)

    if clean_y is None:
        # meta scores: one pseudo-class holding every clean row, weight 1/M
        clean_y_t = torch.zeros(M, dtype=torch.int64, device=zs[0].device)
    else:
        V.check_label_vector("clean_y", clean_y, M)
        clean_y_t = clean_y
        named["clean_y"] = clean_y
    if y is not None:
        V.check_label_vector("y", y, B)
        named["y"] = y
    device = V.check_same_device(named)
    C = _class_count(V.check_num_classes(num_classes), clean_y, y, B)

    acc = acc_dtype_for(dtype)
    cache_tensors = (*zs, *fs, clean_y, center_labels)  # every clean-side input
    cache_options = (C, center, acc)
    memoised = clean_cache.usable(cache_tensors)
    memo = clean_cache.get(cache_tensors, cache_options) if memoised else None
    if memo is not None:  # the planner counts clean-side work as amortised once the clean side recurs
        memo["reuses"] = memo.get("reuses", 0) + 1
    # The clean tensors' values were checked by an earlier call that made or reused this memo entry,
    # and cannot have changed since (the entry is keyed on their in-place version counters).
    clean_checked = memo is not None and memo.get("values_checked", False)
    if check_values:
        _check_values(named, clean_y, clean_y_t, y, C, clean_checked)

    clean_y_t = clean_y_t.to(torch.int64)
    if memo is None:
        memo = _class_weights(clean_y_t, C, acc, device)
        if memoised:
            clean_cache.put(cache_tensors, cache_options, memo)
    if check_values:
        memo["values_checked"] = True
    counts, class_weight = memo["counts"], memo["class_weight"]

    y_t = None
    if y is not None:
        y_t = y.to(torch.int64)
        if check_values:
            _check_batch_labels(y_t, counts, C, B, require_two_classes, on_missing_class)

    if "mus" not in memo:
        memo["mus"] = _centering_means(zs, clean_y, clean_y_t, counts, center, center_labels, check_values, acc)
    layers = [Layer(x=xl, z=zl, mu=mu, e=el, f=fl) for xl, zl, el, fl, mu in zip(xs, zs, es, fs, memo["mus"])]

    return Problem(
        layers=layers,
        clean_y=clean_y_t,
        num_classes=C,
        class_counts=counts,
        class_weight=class_weight,
        cosine=(normalize == "cosine"),
        acc_dtype=acc,
        device=device,
        y=y_t,
        clean_memo=memo,
    )


def _factor_lists(x, clean_x, x2, clean_x2):
    """(xs, zs, es, fs): the per-layer factors, es/fs ``[None] * L`` for the feature kernel."""
    xs = V.as_factor_list("x", x)
    zs = V.as_factor_list("clean_x", clean_x)
    if len(xs) != len(zs):
        raise ValueError(f"x and clean_x must have the same number of layers, got {len(xs)} and {len(zs)}")
    if (x2 is None) != (clean_x2 is None):
        raise ValueError("x2 and clean_x2 must be given together (gradient kernel) or both be None (feature kernel)")
    if x2 is None:
        return xs, zs, [None] * len(xs), [None] * len(xs)
    es = V.as_factor_list("x2", x2)
    fs = V.as_factor_list("clean_x2", clean_x2)
    if not (len(es) == len(fs) == len(xs)):
        raise ValueError(
            f"x, x2, clean_x and clean_x2 must have the same number of layers, got {len(xs)}, {len(es)}, {len(zs)} and {len(fs)}"
        )
    return xs, zs, es, fs


def _checked_factors(xs, zs, es, fs):
    """(B, M, dtype, {name: factor}) after the shape and dtype checks of every layer's factors."""
    B, M = xs[0].shape[0], zs[0].shape[0]
    dtype = xs[0].dtype
    named = {}
    for i, (xl, zl, el, fl) in enumerate(zip(xs, zs, es, fs)):
        sfx = f"[{i}]" if len(xs) > 1 else ""
        if xl.shape[0] != B:
            raise ValueError(f"x{sfx} must have {B} rows like x[0], got {xl.shape[0]}")
        if zl.shape[0] != M:
            raise ValueError(f"clean_x{sfx} must have {M} rows like clean_x[0], got {zl.shape[0]}")
        if zl.shape[1] != xl.shape[1]:
            raise ValueError(
                f"clean_x{sfx} must have the same feature size as x{sfx} ({xl.shape[1]}), got shape {tuple(zl.shape)}"
            )
        pairs = [(f"x{sfx}", xl), (f"clean_x{sfx}", zl)]
        if el is not None:
            if el.shape[0] != B:
                raise ValueError(f"x2{sfx} must have {B} rows like x, got shape {tuple(el.shape)}")
            if fl.shape[0] != M:
                raise ValueError(f"clean_x2{sfx} must have {M} rows like clean_x, got shape {tuple(fl.shape)}")
            if fl.shape[1] != el.shape[1]:
                raise ValueError(
                    f"clean_x2{sfx} must have the same feature size as x2{sfx} ({el.shape[1]}), got shape {tuple(fl.shape)}"
                )
            pairs += [(f"x2{sfx}", el), (f"clean_x2{sfx}", fl)]
        for name, t in pairs:
            if t.dtype != dtype:
                raise TypeError(f"{name} has dtype {t.dtype} but x has {dtype}; all feature tensors must share one dtype")
            named[name] = t
    if M == 0:
        raise ValueError("clean_x is empty: the clean subset needs at least one sample (got 0 rows)")
    return B, M, dtype, named


def _class_count(num_classes, clean_y, y, B) -> int:
    """C: 1 for meta scores (no clean labels), else ``num_classes`` or the largest label + 1."""
    if clean_y is None:
        return 1
    if num_classes is not None:
        return num_classes
    # inferring C reads the labels back (one sync); pass num_classes to avoid it
    hi = clean_y.max()
    if y is not None and B > 0:
        hi = torch.maximum(hi, y.max())
    C = int(hi) + 1
    if C < 1:
        raise ValueError(f"clean_y must hold class labels >= 0, got values up to {C - 1}")
    return C


def _check_values(named, clean_y, clean_y_t, y, C, clean_checked) -> None:
    """Finite features and labels in range (one host synchronisation); the clean side's only when an
    earlier call has not checked these clean tensors already."""
    vc = V.ValueChecks()
    for name, t in named.items():
        if t.is_floating_point() and not (clean_checked and name.startswith("clean_")):
            vc.finite(name, t)
    if clean_y is not None and not clean_checked:
        vc.labels_in_range("clean_y", clean_y_t, C)
    if y is not None:
        vc.labels_in_range("y", y, C)
    vc.run()


def _class_weights(clean_y_t, C, acc, device) -> dict:
    """A new clean memo: the class counts of the clean labels in [0, C) and the weights 1/M_c."""
    in_range = (clean_y_t >= 0) & (clean_y_t < C)
    counts = torch.zeros(C, dtype=torch.int64, device=device)
    counts.index_add_(0, clean_y_t.clamp(0, C - 1), in_range.to(torch.int64))
    class_weight = torch.where(counts > 0, 1.0 / counts.clamp_min(1).to(acc), torch.zeros((), dtype=acc, device=device))
    return {"counts": counts, "class_weight": class_weight}


def _check_batch_labels(y_t, counts, C, B, require_two_classes, on_missing_class) -> None:
    """The value checks of the batch labels against the clean classes (one host synchronisation)."""
    vc = V.ValueChecks()
    if require_two_classes:
        def two_msg():
            present = torch.nonzero(counts > 0).flatten().tolist()
            return (
                "clean_y must contain at least two classes for label-signed scores (SPEC §3.4); "
                f"the clean subset holds only class(es) {present}"
            )

        vc.add((counts > 0).sum() >= 2, two_msg)
    if on_missing_class == "raise" and B > 0:
        missing = counts[y_t.clamp(0, C - 1)] == 0

        def miss_msg():
            cls = sorted(set(y_t[missing].tolist()))
            return (
                f"y contains class(es) {cls[:10]} that are absent from the clean subset (clean_y); "
                "every batch label needs at least one clean sample of its class, or pass on_missing_class='skip'"
            )

        vc.add(~missing.any(), miss_msg)
    vc.run()


def _centering_means(zs, clean_y, clean_y_t, counts, center, center_labels, check_values, acc):
    """Per layer: the class-balanced clean mean of SPEC §3.1 (None for ``center="none"``)."""
    if center != "clean":
        return [None] * len(zs)
    if center_labels is not None:
        V.check_label_vector("clean_y", center_labels, zs[0].shape[0])
        V.check_same_device({"clean_x": zs[0], "clean_y": center_labels})
        if check_values:
            vc = V.ValueChecks()
            vc.add((center_labels >= 0).all(), lambda: "clean_y must hold class labels >= 0")
            vc.run()
        center_y = center_labels.to(torch.int64)
        center_counts = torch.bincount(center_y.clamp_min(0))
        return [class_balanced_mean(z, center_y, center_counts, acc) for z in zs]
    if clean_y is None:
        return [z.to(acc).mean(dim=0) for z in zs]
    return [class_balanced_mean(z, clean_y_t, counts, acc) for z in zs]
