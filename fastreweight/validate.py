"""Input validation shared by every public entry point.

Two kinds of checks live here:

* **metadata checks** (types, dtypes, ranks, shapes, devices): free, always run;
* **value checks** (labels in range, NaN/Inf, classes present in the clean subset, duplicated
  indices): they read tensor contents, which on a GPU means one host synchronisation.  All value
  checks of one call are reduced on the device and read back with a *single* ``.tolist()``; only a
  failing call pays for the details of its error message.  Callers on a hot path pass
  ``check_values=False`` and get the metadata checks alone; every backend is written so that bad
  values can never make it read or write out of bounds (labels outside ``[0, C)`` are treated as
  absent classes), only produce meaningless numbers.

Every error is a ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
content) whose message starts with the argument's name and says what was expected.
"""
from __future__ import annotations

import numbers

import math
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)

CENTER_OPTIONS = ("clean", "none")
NORMALIZE_OPTIONS = (None, "none", "cosine")
SHIFT_OPTIONS = ("second", "max", "mean", "none")
STRATEGY_OPTIONS = ("auto", "pairwise", "prototype")
BACKEND_OPTIONS = ("auto", "reference", "triton", "cpp", "cuda")
MISSING_OPTIONS = ("raise", "skip")
NORMALIZE_UPDATE_OPTIONS = ("mean_abs", "none")
REDUCTION_OPTIONS = ("weight_sum", "batch")


def check_option(name: str, value, options: Sequence) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


def check_alpha(alpha) -> float:
    """The label-signed modulation ``alpha`` of SPEC §3.4: a finite float >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a non-negative float, got {type(alpha).__name__}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite float >= 0, got {alpha}")
    return float(alpha)


def check_tensor(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_float_matrix(name: str, t) -> torch.Tensor:
    check_tensor(name, t)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {t.dtype}"
        )
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor of shape [rows, features], got shape {tuple(t.shape)}")
    return t


def check_float_vector(name: str, t, length: int | None = None) -> torch.Tensor:
    check_tensor(name, t)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {t.dtype}"
        )
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor, got shape {tuple(t.shape)}")
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {t.shape[0]}")
    return t


def check_label_vector(name: str, t, length: int, what: str = "label") -> torch.Tensor:
    """``t``: a 1-D integer tensor of ``length`` entries, one ``what`` (``"label"``: a class label;
    ``"index"``: a dataset index) per row."""
    check_tensor(name, t)
    kind = "class labels" if what == "label" else "dataset indices"
    if t.dtype not in INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor of {kind} (int64 preferred), got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of shape [{length}], got shape {tuple(t.shape)}")
    if t.shape[0] != length:
        raise ValueError(f"{name} must have length {length} (one {what} per row), got {t.shape[0]}")
    return t


def as_factor_list(name: str, x) -> list[torch.Tensor]:
    """A tensor or a non-empty list/tuple of tensors -> list of 2-D float tensors."""
    if isinstance(x, torch.Tensor):
        return [check_float_matrix(name, x)]
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError(f"{name} must be a tensor or a non-empty list of per-layer tensors, got an empty {type(x).__name__}")
        return [check_float_matrix(f"{name}[{i}]", t) for i, t in enumerate(x)]
    raise TypeError(f"{name} must be a torch.Tensor or a list of per-layer tensors, got {type(x).__name__}")


def check_num_classes(num_classes) -> int | None:
    if num_classes is None:
        return None
    # numbers.Integral: a numpy integer such as labels.max() + 1 is an int too
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be a positive int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes}")
    return int(num_classes)


def device_problem(dev: torch.device) -> str | None:
    """Why ``dev`` cannot be used by this PyTorch build on this machine (``None``: it can), checked before
    any work: without CUDA, torch's own error is an ``AssertionError`` deep inside the first copy."""
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return ("CUDA is not available in this PyTorch build or on this machine"
                    + (" (a CPU-only build)" if torch.version.cuda is None and torch.version.hip is None else ""))
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s) are visible, numbered from 0"
        return None
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "MPS is not available in this PyTorch build or on this machine"
        return None
    if dev.type == "cpu":
        return None
    try:
        torch.empty(0, device=dev)
    except Exception as e:  # noqa: BLE001 - whatever the backend raises for an unusable device
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def check_same_device(named: dict[str, torch.Tensor]) -> torch.device:
    devices = {name: t.device for name, t in named.items() if t is not None}
    first_name, first = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(
                f"all inputs must be on one device: {first_name} is on {first} but {name} is on {dev}"
            )
    return first


class ValueChecks:
    """Collects data-dependent checks as device booleans and reads them back in one sync.

    ``add(ok, make_message)``: ``ok`` is a 0-d bool tensor (True = fine); ``make_message`` is called
    only if the check failed, so it may do expensive work (find the offending class, ...).
    """

    def __init__(self) -> None:
        self._flags: list[torch.Tensor] = []
        self._messages: list = []

    def add(self, ok: torch.Tensor, make_message) -> None:
        self._flags.append(ok.reshape(()).to(torch.bool))
        self._messages.append(make_message)

    def finite(self, name: str, t: torch.Tensor) -> None:
        if t.numel() == 0:
            return
        # min and max propagate NaN and reach ±Inf: both finite <=> every element finite.  One fused
        # reduction, ~20x cheaper than materialising isfinite(t) and reducing it.
        lo, hi = torch.aminmax(t)
        self.add(torch.isfinite(lo) & torch.isfinite(hi),
                 lambda: f"{name} contains NaN or Inf values; features and scores must be finite")

    def labels_in_range(self, name: str, labels: torch.Tensor, num_classes: int) -> None:
        if labels.numel() == 0:
            return

        def msg():
            lo, hi = int(labels.min()), int(labels.max())
            return f"{name} must hold class labels in [0, {num_classes}), got values in [{lo}, {hi}]"

        self.add(((labels >= 0) & (labels < num_classes)).all(), msg)

    def run(self) -> None:
        if not self._flags:
            return
        oks = torch.stack(self._flags).tolist()  # the one host synchronisation
        for ok, make_message in zip(oks, self._messages):
            if not ok:
                raise ValueError(make_message())


def check_index_vector(name: str, idx, length: int, num_samples: int, check_values: bool) -> torch.Tensor:
    check_label_vector(name, idx, length, what="index")
    if check_values and idx.numel() > 0:
        vc = ValueChecks()

        def range_msg():
            lo, hi = int(idx.min()), int(idx.max())
            return f"{name} must hold dataset indices in [0, {num_samples}), got values in [{lo}, {hi}]"

        vc.add(((idx >= 0) & (idx < num_samples)).all(), range_msg)
        srt = torch.sort(idx.to(torch.int64)).values

        def dup_msg():
            d = srt[1:][srt[1:] == srt[:-1]]
            return f"{name} must not repeat an index within a batch; {int(d[0])} appears more than once"

        vc.add(~(srt[1:] == srt[:-1]).any() if srt.numel() > 1 else torch.ones((), dtype=torch.bool, device=idx.device), dup_msg)
        vc.run()
    return idx
